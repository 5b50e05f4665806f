"""The aggregator over real Pyro5: numbers past SQLite's range and oversized hellos come back as a
typed BadRequest (never a raw OverflowError), and a refused call leaves no node at the hub."""

from __future__ import annotations

import time

import pytest

from actors.client import connect
from actors.errors import BadRequest
from tests.helpers import HOST

READING = {"sensor": "probe", "quantity": "temperature", "value": 20.5, "unit": "°C", "ts": 1_700_000_000.0}


@pytest.fixture
def agg(cluster):
    return connect(HOST, cluster.ns_port)["hub"]["aggregator"]


def test_aggregator_push_past_sqlite_integers_is_a_bad_request(cluster, agg):
    hub = cluster.hub.role.hub
    rejected = hub.rejected
    with pytest.raises(BadRequest, match="'seq' must be a positive integer up to 9223372036854775807"):
        agg.push([{"node": "rover", "seq": 2**63, "readings": [READING]}])
    with pytest.raises(BadRequest, match="before 1970"):
        agg.push([{"node": "rover", "seq": 1, "readings": [{**READING, "ts": -(2**63)}]}])
    assert hub.rejected == rejected + 2
    assert "rover" not in hub.node_names() and "rover" not in {n["name"] for n in hub.store.nodes()}
    assert agg.push([{"node": "rover", "seq": 2**63 - 1, "readings": [READING]}])["acked"] == [2**63 - 1]


def test_aggregator_hello_bounds_its_info(cluster, agg):
    hub = cluster.hub.role.hub
    with pytest.raises(BadRequest, match="strings must be UTF-8 text of at most 256 characters"):
        agg.hello({"node": "rover", "blob": "x" * 1_500_000})
    with pytest.raises(BadRequest, match="more than 512 keys and list items"):
        agg.hello({"node": "rover", "blob": ["y"] * 1000})
    with pytest.raises(BadRequest, match="numbers must be finite"):
        agg.hello({"node": "rover", "limits": {"x": 2**63}})
    assert "rover" not in hub.node_names()
    # an absurd clock is ignored: the hello counts, the offset is not measured
    assert agg.hello({"node": "rover", "push_interval": 2.0}, 1e308) == {"last_seq": 0}
    assert cluster.node_snapshot("rover")["clock_offset"] is None
    agg.hello({"node": "rover", "push_interval": 2.0}, time.time() + 120)
    assert 100 < cluster.node_snapshot("rover")["clock_offset"] < 140


def test_a_drained_backlog_is_decoded_typed_by_the_hubs_daemon_and_a_bad_one_refused_as_before(
        cluster, agg, monkeypatch):
    """A hub's agent registers the aggregator's push with nameserver.pyro for actors.hub.wire's
    decoder: an agent's push (batches and its clock) arrives as typed batches, and a push the
    checks refuse gets the message the batch path gives, from the same bytes."""
    from actors.hub.ingest import TypedBatches
    from nameserver import pyro

    key = ("harvester.hub.aggregator", "push")
    call = pyro._typed_calls[key]
    decoded: list[bool] = []

    def counting(vargs):
        out = call.decode(vargs)
        decoded.append(type(out[0]) is TypedBatches)
        return out

    monkeypatch.setitem(pyro._typed_calls, key, call._replace(decode=counting))
    now = time.time()
    batches = [{"node": "rover", "seq": seq, "readings": [{**READING, "ts": now - 60 + seq, "value": 20.0 + seq % 5}]}
               for seq in range(1, 51)]
    assert agg.push(batches, now)["acked"] == list(range(1, 51))
    bad = [dict(b, seq=b["seq"] + 50) for b in batches]
    bad[7] = {**bad[7], "readings": [{**READING, "ts": now, "unit": "K"}]}
    with pytest.raises(BadRequest, match=r"batch rover#58 reading 0: .*temperature is measured in '°C'"):
        agg.push(bad, now)
    assert decoded == [True, True]
    assert cluster.hub.role.hub.store.count("rover") == 50
