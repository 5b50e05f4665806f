"""The spoke holds what it stamped while its clock was not synchronised, releases it corrected
once it syncs, and sets aside what the hub refuses instead of retrying it forever."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from actors.errors import BadRequest
from actors.node.config import load_config
from actors.spoke.outbox import UNCORRECTABLE, Outbox
from actors.spoke.pusher import HubLink, Pusher
from actors.spoke.role import SpokeRole
from hal.readings import Reading
from hal.timesync import ClockMark, ClockStatus
from tests.helpers import write_node_config

BOOT = "boot-a"
# A board that booted at 1970 (wall - monotonic = 0 s) and that NTP stepped to late 2023
UNSET = ClockMark(BOOT, 0.0)
SET = ClockMark(BOOT, 1_700_000_000.0)


def readings(ts: float, value: float = 21.0) -> list[Reading]:
    return [Reading.measured("pi4", "dht22", "temperature", value, ts=ts)]


@pytest.fixture
def box(tmp_path) -> Outbox:
    b = Outbox(tmp_path / "outbox.sqlite3", "pi4")
    yield b
    b.close()


def seqs(batches: list[dict[str, Any]]) -> list[int]:
    return [b["seq"] for b in batches]


def test_a_held_batch_and_every_batch_after_it_wait(box):
    box.append(readings(1_700_000_000.0))
    box.append(readings(86_400.0), unsynced=UNSET)
    box.append(readings(1_700_000_010.0))  # stamped after a sync that release() has not seen yet
    assert seqs(box.peek(10)) == [1]
    box.ack([1])
    assert box.peek(10) == []
    stats = box.stats()
    assert stats["held_unsynced"] == 1 and stats["pending_batches"] == 2
    assert box.held() == 1


def test_release_corrects_the_stamps_by_the_clock_step(box):
    box.append(readings(86_400.0), [{"plugin": "room", "alert": "hot", "ts": 86_401.0, "since": 86_300.0}],
               unsynced=UNSET)
    box.append(readings(86_405.0), unsynced=UNSET)
    assert box.release(SET) == (2, 0)
    batches = box.peek(10)
    assert seqs(batches) == [1, 2]
    assert batches[0]["readings"][0]["ts"] == 1_700_086_400.0
    assert batches[0]["alerts"][0]["ts"] == 1_700_086_401.0 and batches[0]["alerts"][0]["since"] == 1_700_086_300.0
    assert batches[1]["readings"][0]["ts"] == 1_700_086_405.0
    assert box.stats()["held_unsynced"] == 0


def test_a_clock_that_synced_without_a_step_keeps_the_stamps(box):
    box.append(readings(1_700_000_000.0), unsynced=SET)
    assert box.release(SET) == (1, 0)
    assert box.peek(1)[0]["readings"][0]["ts"] == 1_700_000_000.0


def test_batches_held_in_an_earlier_boot_are_set_aside_not_sent_with_wrong_times(box):
    box.append(readings(86_400.0), unsynced=ClockMark("boot-before", 0.0))
    box.append(readings(90.0), unsynced=UNSET)
    assert box.release(SET) == (1, 1)
    assert seqs(box.peek(10)) == [2]
    (kept,) = box.rejected()
    assert kept["seq"] == 1 and kept["reason"] == UNCORRECTABLE
    assert kept["readings"][0]["ts"] == 86_400.0  # kept as it was stamped: nothing is lost
    assert box.stats()["rejected_batches"] == 1


def test_holding_survives_a_restart(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    first = Outbox(path, "pi4")
    first.append(readings(86_400.0), unsynced=UNSET)
    first.close()
    again = Outbox(path, "pi4")
    assert again.peek(10) == [] and again.held() == 1
    assert again.release(SET) == (1, 0)
    assert again.peek(10)[0]["readings"][0]["ts"] == 1_700_086_400.0
    again.close()


def test_an_outbox_from_before_holding_opens_and_pushes(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE batches (seq INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, "
                     "readings TEXT NOT NULL, alerts TEXT NOT NULL DEFAULT '[]');"
                     "INSERT INTO batches (created, readings) VALUES (1.0, '[]');")
    db.commit()
    db.close()
    box = Outbox(path, "pi4")
    assert seqs(box.peek(10)) == [1]
    box.close()


def test_reject_sets_a_batch_aside_with_the_reason(box):
    for ts in (1_700_000_000.0, 86_400.0, 1_700_000_002.0):
        box.append(readings(ts))
    box.reject(2, "timestamp 86400 is 1970-01-02, before 2020-01-01")
    assert seqs(box.peek(10)) == [1, 3]
    assert [(r["seq"], r["reason"]) for r in box.rejected()] == [(2, "timestamp 86400 is 1970-01-02, before 2020-01-01")]
    box.reject(99, "no such batch")  # gone already (acknowledged): nothing to do
    assert box.stats()["rejected_batches"] == 1


class FakeAggregator:
    """Refuses, all or nothing as the hub does, any call holding a batch stamped before 2020."""

    def __init__(self) -> None:
        self.stored: list[int] = []
        self.calls: list[list[int]] = []
        self.hellos: list[dict[str, Any]] = []

    def hello(self, info: dict[str, Any], sent_at: float) -> dict[str, Any]:
        self.hellos.append(info)
        return {"last_seq": 0}

    def push(self, batches: list[dict[str, Any]], sent_at: float) -> dict[str, Any]:
        self.calls.append(seqs(batches))
        for b in batches:
            for r in b["readings"]:
                if r["ts"] < 1_577_836_800:
                    raise BadRequest(f"batch pi4#{b['seq']} reading 0: timestamp {r['ts']} is before 2020-01-01")
        self.stored += [b["seq"] for b in batches if b["seq"] not in self.stored]
        return {"acked": seqs(batches), "duplicates": 0, "hello": []}


def test_a_batch_the_hub_refuses_does_not_block_the_ones_behind_it(box):
    for ts in (1_700_000_000.0, 1_700_000_001.0, 86_400.0, 1_700_000_003.0):
        box.append(readings(ts))
    pusher = Pusher("pi4", box, [("127.0.0.1", 1)], None, 50, lambda: {"node": "pi4"})
    agg = FakeAggregator()
    assert pusher._drain(pusher.links[0], agg) == 2  # the two before the refused one
    assert [r["seq"] for r in box.rejected()] == [3]
    assert "before 2020-01-01" in box.rejected()[0]["reason"]
    assert pusher._drain(pusher.links[0], agg) == 1  # and the one behind it, next run
    assert agg.stored == [1, 2, 4] and box.peek(10) == []


class Clock:
    """A kernel clock state a test sets, in a boot it sets."""

    def __init__(self) -> None:
        self.synced: bool | None = True
        self.boot = "boot-1"

    def __call__(self) -> ClockStatus:
        return ClockStatus(self.synced, "clock synchronised" if self.synced else "clock not synchronised",
                           boot=self.boot)


@pytest.fixture
def spoke(tmp_path):
    cfg = load_config(write_node_config(tmp_path / "pi4.toml", "pi4", "spoke", 1))
    role = SpokeRole(cfg)
    role.build()
    role.clock_status = clock = Clock()
    yield role, clock
    role.stop()


def test_the_spoke_holds_while_unsynchronised_and_releases_once_synced(spoke):
    role, clock = spoke
    role.store(readings(1_700_000_000.0))
    clock.synced, clock.boot = False, "boot-2"  # a board that booted without a real-time clock
    role.store(readings(100.0, 22.0))
    role.alert({"plugin": "room", "alert": "hot"})
    role._flush_alerts()
    assert role.hello_info()["clock_synced"] is False
    role.release_held()  # still unsynchronised: nothing moves
    assert seqs(role.outbox.peek(10)) == [1] and role.outbox.held() == 2
    assert role.notes() == ["2 batches stamped while the clock was not synchronised are held in the outbox "
                            "until it syncs"]
    clock.synced = True
    role.release_held()
    assert seqs(role.outbox.peek(10)) == [1, 2, 3] and role.outbox.held() == 0
    assert role.hello_info()["clock_synced"] is True and role.notes() == []


def test_a_change_of_the_clock_state_is_told_in_a_hello_at_the_next_push(spoke):
    role, clock = spoke
    link: HubLink = role.pusher.links[0]
    role.release_held()
    link.hello_done = True
    clock.synced = False
    role.release_held()
    assert link.hello_done is False  # the next push run says hello first, with clock_synced False
    link.hello_done = True
    role.release_held()
    assert link.hello_done is True  # no change, no extra hello


def test_holding_can_be_turned_off(tmp_path):
    cfg = load_config(write_node_config(tmp_path / "pi4.toml", "pi4", "spoke", 1), ["push.hold_unsynced=false"])
    role = SpokeRole(cfg)
    role.build()
    clock = Clock()
    clock.synced = False
    role.clock_status = clock
    role.store(readings(1_700_000_000.0))
    assert seqs(role.outbox.peek(10)) == [1] and role.outbox.held() == 0
    role.stop()


def test_an_unknown_clock_state_holds_nothing(spoke):
    role, clock = spoke
    clock.synced = None  # no adjtimex to ask
    role.store(readings(1_700_000_000.0))
    assert seqs(role.outbox.peek(10)) == [1]


def test_a_clock_set_in_this_boot_that_lost_its_time_server_is_not_held(spoke, tmp_path):
    """The kernel sets STA_UNSYNC again hours after NTP went quiet; that clock drifts, it does not jump."""
    role, clock = spoke
    role.store(readings(1_700_000_000.0))  # seen synchronised in boot-1
    clock.synced = False
    role.store(readings(1_700_000_005.0))
    assert seqs(role.outbox.peek(10)) == [1, 2] and role.outbox.held() == 0
    assert role.hello_info()["clock_synced"] is False  # the hub still flags it
    assert role.notes() == ["the clock was synchronised earlier in this boot: readings go out as stamped "
                            "(it drifts without its time server, it does not jump)"]
    # an agent restarted in the same boot still knows
    again = SpokeRole(role.config)
    again.build()
    again.clock_status = clock
    again.store(readings(1_700_000_010.0))
    assert again.outbox.held() == 0
    again.stop()
    clock.boot = "boot-2"  # rebooted, NTP not heard from yet: held
    role.store(readings(86_400.0))
    assert role.outbox.held() == 1
