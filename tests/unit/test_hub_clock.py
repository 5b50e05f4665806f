"""The hub and an unset or unsynchronised clock: stamps before 2020 are refused saying why, the
node's hello says whether its kernel clock is synchronised, and the dashboard flags it."""

from __future__ import annotations

import pytest

from actors.errors import BadRequest
from actors.hub.ingest import validate_batch
from actors.hub.state import Hub
from actors.hub.store import Store
from tests.clocks import ManualClock
from web.view import node_card, warning_text

NOW = 1_750_000_000.0
START_OF_2020 = 1_577_836_800.0


def batch(ts: float, seq: int = 1) -> dict:
    return {"node": "pi4", "seq": seq, "readings": [
        {"sensor": "dht22", "quantity": "temperature", "value": 21.0, "unit": "°C", "ts": ts}]}


@pytest.fixture
def hub(tmp_path):
    h = Hub(Store(tmp_path / "hub.sqlite3"), ManualClock(NOW))
    yield h
    h.store.close()


def test_a_stamp_before_2020_is_refused_saying_why():
    with pytest.raises(BadRequest) as refused:
        validate_batch(batch(86_400), NOW)
    assert str(refused.value) == (
        "batch pi4#1 reading 0: timestamp 86400 is 1970-01-02, before 2020-01-01: the sender's clock is not set "
        "(a board without a real-time clock before NTP syncs); expected epoch seconds from a set clock")


@pytest.mark.parametrize(("ts", "when"), [(-1, "1969-12-31, before 2020-01-01"), (-(2**70), "before 1970"),
                                          (START_OF_2020 - 0.5, "2019-12-31, before 2020-01-01")])
def test_negative_and_late_2019_stamps_are_refused_too(ts, when):
    with pytest.raises(BadRequest, match=f"is {when}: the sender's clock is not set"):
        validate_batch(batch(ts), NOW)


def test_the_first_second_of_2020_is_taken():
    assert validate_batch(batch(START_OF_2020), NOW).rows[0].ts == START_OF_2020


def test_a_refused_push_stores_nothing_and_is_counted(hub):
    with pytest.raises(BadRequest, match="before 2020-01-01"):
        hub.push([batch(NOW - 10, 1), batch(86_400, 2)])
    assert hub.store.count() == 0 and hub.rejected == 1 and "pi4" not in hub.node_names()


def test_the_hello_tells_the_hub_whether_the_clock_is_synchronised(hub):
    hub.hello({"node": "pi4", "clock_synced": False}, NOW)
    [node] = hub.snapshot()["nodes"]
    assert node["clock_synced"] is False
    assert warning_text(node) == "clock not synchronised"
    hub.hello({"node": "pi4", "clock_synced": True}, NOW)
    [node] = hub.snapshot()["nodes"]  # the cached view follows the hello
    assert node["clock_synced"] is True and warning_text(node) == ""


def test_a_node_that_says_nothing_about_its_clock_is_not_flagged(hub):
    hub.hello({"node": "pi4"}, NOW)
    [node] = hub.snapshot()["nodes"]
    assert node["clock_synced"] is None and warning_text(node) == ""


def test_an_unset_clock_is_still_measured_and_named_as_unset(hub):
    """A hello stamped in 1970 counts (the node is alive); its offset says the clock was never set."""
    hub.hello({"node": "pi4", "clock_synced": False}, 86_400.0)
    [node] = hub.snapshot()["nodes"]
    assert node["online"] and node["clock_offset"] == 86_400.0 - NOW and node["clock_ok"] is False
    assert warning_text(node) == "clock not synchronised · clock not set: it reads 1970-01-02"


def test_the_card_names_held_and_refused_batches_and_a_skew_in_days():
    node = {"name": "pi4", "role": "spoke", "profile": "wasm", "online": True, "last_seen": NOW,
            "clock_synced": False, "clock_ok": False, "clock_offset": 3 * 86400.0,
            "outbox": {"held_unsynced": 12, "rejected_batches": 2}, "sensors": {}}
    card = node_card(node, NOW, set())
    assert card["warning"] == ("clock not synchronised: 12 batches held until it syncs · clock off by +3.0 days"
                               " · 2 batches refused, kept in its outbox")
    assert warning_text({**node, "clock_synced": True, "clock_offset": -42.4, "outbox": {}}) == "clock off by -42 s"
