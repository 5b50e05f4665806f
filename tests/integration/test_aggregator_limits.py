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
