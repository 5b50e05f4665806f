"""Hub.push, Hub.hello and Hub.record_alerts range-check every number and string before SQLite
sees it, and a refused call changes nothing: no node (in memory or in the store), no rows, the
rejected counter up by exactly one."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from actors.errors import BadRequest, StoreFull
from actors.hub.ingest import MAX_INFO_BYTES, SQLITE_INT_MAX, shown
from actors.hub.state import Hub, offset_text, plausible_sent_at
from actors.hub.store import Store
from tests.clocks import ManualClock

NOW = 1_700_000_000.0


def reading(**fields: Any) -> dict[str, Any]:
    return {"sensor": "dht22", "quantity": "temperature", "value": 21.5, "unit": "°C", "ts": NOW - 1, **fields}


def batch(seq: Any = 1, node: str = "rover", **fields: Any) -> dict[str, Any]:
    return {"node": node, "seq": seq, "readings": [reading(**fields)]}


def alert(**fields: Any) -> dict[str, Any]:
    return {"plugin": "room", "version": "1.0", "alert": "room-hot", "state": "raised", "severity": "warning",
            "message": "hot", "node": "rover", "sensor": "dht22", "quantity": "temperature", "value": 31.0,
            "ts": NOW - 1, **fields}


@pytest.fixture
def hub(tmp_path):
    h = Hub(Store(tmp_path / "hub.sqlite3"), ManualClock(NOW))
    yield h
    h.store.close()


def unchanged(hub: Hub) -> dict[str, Any]:
    """Everything a refused call must leave as it was (the rejected counter aside)."""
    return {"nodes": hub.node_names(), "stored": hub.store.nodes(), "rows": hub.store.count(),
            "readings_stored": hub.readings_stored, "duplicates": hub.duplicates,
            "alerts": hub.store.alerts(active_only=False)}


def refused(hub: Hub, call: Any, match: str) -> None:
    """`call` raises a one-line BadRequest matching `match` and changes nothing."""
    before = unchanged(hub)
    with pytest.raises(BadRequest, match=match) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    assert unchanged(hub) == before


@pytest.mark.parametrize("bad, match", [
    (batch(seq=2**63), r"'seq' must be a positive integer up to 9223372036854775807, got 9223372036854775808"),
    (batch(seq=10**5000), r"'seq' must be a positive integer .* got <an integer of \d+ bits>"),
    (batch(seq=-(2**64)), "'seq' must be a positive integer"),
    (batch(ts=2**63), "more than 86400 s in the future"),
    (batch(ts=10**400), "ts must be a finite number"),
    (batch(ts=-(2**70)), "before 1970"),
    (batch(ts=-1e300), "before 1970"),
    (batch(value=10**400), "value must be a finite number"),
    (batch(value=2**63), "outside the plausible range"),
    (batch(value=None, quality="unavailable", reason="\ud800"), "not valid Unicode"),
    ({**batch(), "alerts": [alert(value=2**63)]}, "bad alert field 'value'.*finite number"),
    ({**batch(), "alerts": [alert(ts=10**400)]}, "bad alert field 'ts'.*finite number"),
    ({**batch(), "alerts": [alert(since=-(2**63) - 1)]}, "bad alert field 'since'"),
    ({**batch(), "alerts": [alert(message="\udcff")]}, "bad alert field 'message'.*not valid Unicode"),
    ("x" * 2_000_000, "a batch must be an object"),
    ({"node": "r" * 1_000_000, "seq": 1, "readings": []}, r"batch 'node' must match .{1,100}$"),
])
def test_push_out_of_range_is_refused_before_sqlite_and_changes_nothing(hub, bad, match):
    hub.push([batch(1, node="known")])  # the hub holds something a refused call must not touch
    refused(hub, lambda: hub.push([batch(2, node="known"), bad]), match)
    assert hub.rejected == 1  # counted once, in Hub.push


def test_push_accepts_the_largest_seq_sqlite_holds(hub):
    assert hub.push([batch(SQLITE_INT_MAX)])["acked"] == [SQLITE_INT_MAX]
    assert hub.snapshot()["nodes"][0]["last_seq"] == SQLITE_INT_MAX
    assert hub.store.nodes()[0]["last_seq"] == SQLITE_INT_MAX


@pytest.mark.parametrize("batches, match", [
    ([], "no batches; expected a batch or a list"),
    ([batch(i) for i in range(1, 502)], "at most 500 batches per push, got 501"),
])
def test_push_refusals_before_the_batch_checks_count_too(hub, batches, match):
    refused(hub, lambda: hub.push(batches), match)
    assert hub.rejected == 1


def test_push_whose_commit_fails_leaves_no_node_behind(hub, monkeypatch):
    def full(*args: Any) -> None:
        raise StoreFull("hub store is full")

    monkeypatch.setattr(hub.store, "commit_batches", full)
    before = unchanged(hub)
    with pytest.raises(StoreFull):
        hub.push([batch(1, node="newcomer")])
    assert unchanged(hub) == before and hub.rejected == 0
    monkeypatch.undo()
    assert hub.push([batch(1, node="newcomer")])["hello"] == ["newcomer"]  # registered on the retry
    assert [n["name"] for n in hub.store.nodes()] == ["newcomer"]


@pytest.mark.parametrize("info, match", [
    ({"node": "rover", "blob": "x" * 1_500_000}, "strings must be UTF-8 text of at most 256 characters"),
    ({"node": "rover", "many": list(range(10_000))}, "more than 512 keys and list items"),
    ({"node": "rover", **{f"k{i}": i for i in range(600)}}, "more than 512 keys and list items"),
    ({"node": "rover", "blob": ["y" * 250] * 100}, f"hello info is \\d+ bytes as JSON; at most {MAX_INFO_BYTES}"),
    ({"node": "rover", "deep": [[[[[[[[[1]]]]]]]]]}, "nests deeper than 8 levels"),
    ({"node": "rover", "n": [2**63]}, "numbers must be finite"),
    ({"node": "rover", "n": {"x": float("nan")}}, "numbers must be finite"),
    ({"node": "rover", "n": [b"bytes"]}, "bytes is not JSON"),
    ({"node": "rover", "n": {"\ud800": 1}}, "keys must be UTF-8 strings"),
    ({"node": "rover", "stale_after": {"dht22": 10**400}}, r"info.stale_after.dht22: numbers must be finite"),
    ({"node": "rover", "stale_after": {"dht22": 1e12}}, "'stale_after' 'dht22'.*expected a sensor name"),
    ({"node": "rover", "stale_after": {"dht22": -1}}, "'stale_after'"),
    ({"node": "rover", "stale_after": [1, 2]}, "'stale_after' must map sensor names to seconds"),
    ({"node": "rover", "push_interval": 2**64}, r"bad push_interval 18446744073709551616; expected seconds"),
    ({"node": "rover", "role": ["x"]}, "bad role/profile"),
    ({"node": "x" * 100_000}, r"hello needs a valid 'node' .{1,100}$"),
])
def test_hello_bounds_its_info_and_changes_nothing_when_refused(hub, info, match):
    hub.hello({"node": "known", "push_interval": 2.0})
    refused(hub, lambda: hub.hello(info), match)
    assert hub.node_names() == ["known"]


def test_hello_a_node_sends_is_accepted_and_kept(hub):
    info = {"node": "rover", "role": "spoke", "profile": "native", "push_interval": 2.0,
            "stale_after": {f"network-{i}": 12.0 for i in range(100)} | {"dht22": 15.0}}
    assert hub.hello(info, NOW) == {"last_seq": 0}
    assert hub.store.nodes()[0]["info"] == info


def test_hello_whose_store_write_fails_leaves_no_node(hub, monkeypatch):
    def full(*args: Any) -> None:
        raise StoreFull("hub store is full")

    monkeypatch.setattr(hub.store, "upsert_node", full)
    with pytest.raises(StoreFull):
        hub.hello({"node": "rover"})
    assert hub.node_names() == []


@pytest.mark.parametrize("sent_at", [1e308, float("inf"), float("nan"), -5.0, 2**80, 10**400, True, "1"])
def test_absurd_sender_clocks_are_ignored(hub, sent_at, caplog):
    with caplog.at_level(logging.WARNING):
        hub.hello({"node": "rover"}, sent_at=sent_at)
        hub.push([batch(1)], sent_at=sent_at)
    assert hub.snapshot()["nodes"][0]["clock_offset"] is None
    assert plausible_sent_at(sent_at) is None
    assert not caplog.records


def test_a_skewed_clock_logs_its_offset_readably(hub, caplog):
    with caplog.at_level(logging.WARNING):
        hub.hello({"node": "rover"}, sent_at=0.0)  # a board without a real-time clock, booted in 1970
    [record] = caplog.records
    assert record.getMessage() == "node rover clock is off by -19675.9 days (-1700000000 s)"
    assert hub.snapshot()["nodes"][0]["clock_offset"] == -NOW
    assert offset_text(120.25) == "+120.2 s"


def test_local_alerts_are_range_checked_too(hub):
    refused(hub, lambda: hub.record_alerts("hub", [alert(node="hub", value=2**64)]), "bad alert field 'value'")
    hub.record_alerts("hub", [alert(node="hub")])
    assert [a["alert"] for a in hub.alerts()] == ["room-hot"]


def test_shown_keeps_error_messages_short():
    assert shown("x" * 10_000).count("x") < 70
    assert shown(10**5000).startswith("<an integer of ")
    assert shown(2**63) == "9223372036854775808"
    assert shown("pi4🔥") == "'pi4🔥'"


def test_names_with_a_trailing_newline_are_refused_everywhere():
    """`$` in a Python regex also matches before a final newline; every name rule uses \\Z."""
    from hal.names import is_node_name
    from hal.readings import NAME_RE
    from plugins.manifest import NAME_RE as PLUGIN_NAME_RE

    assert is_node_name("rover") and not is_node_name("rover\n")
    assert NAME_RE.match("dht22") and not NAME_RE.match("dht22\n")
    assert PLUGIN_NAME_RE.match("room") and not PLUGIN_NAME_RE.match("room\n")
