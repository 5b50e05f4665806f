import logging

from actors.spoke.outbox import Outbox
from hal.readings import Reading


def readings(v: float) -> list[Reading]:
    return [Reading.measured("pi4", "dht22", "temperature", v, ts=1000.0 + v)]


def test_outbox_fifo_and_ack(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", "pi4")
    seqs = [box.append(readings(v)) for v in (1, 2, 3)]
    assert seqs == [1, 2, 3]
    batches = box.peek(2)
    assert [b["seq"] for b in batches] == [1, 2] and batches[0]["node"] == "pi4"
    assert batches[1]["readings"][0]["value"] == 2.0
    box.ack([1, 2])
    assert [b["seq"] for b in box.peek(10)] == [3]
    assert box.stats() == {"pending_batches": 1, "held_in_memory": 0, "dropped_batches": 0, "disk_full": False,
                           "disk_error": None, "held_unsynced": 0, "rejected_batches": 0}


def test_outbox_survives_reopen_and_keeps_counting(tmp_path):
    path = tmp_path / "o.sqlite3"
    box = Outbox(path, "pi4")
    box.append(readings(1))
    box.ack([1])
    box.close()
    box = Outbox(path, "pi4")
    assert box.append(readings(2)) == 2  # seq never reused, even after the table emptied


def test_outbox_overflow_drops_oldest_and_counts(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", "pi4", max_batches=3)
    for v in range(5):
        box.append(readings(v))
    assert [b["seq"] for b in box.peek(10)] == [3, 4, 5]
    assert box.stats() == {"pending_batches": 3, "held_in_memory": 0, "dropped_batches": 2, "disk_full": False,
                           "disk_error": None, "held_unsynced": 0, "rejected_batches": 0}


def test_outbox_ensure_after_jumps_past_the_hubs_seq(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", "pi4")
    box.ensure_after(41)
    assert box.append(readings(1)) == 42
    box.ensure_after(10)  # never goes backwards
    assert box.append(readings(2)) == 43


def test_outbox_carries_alert_events_with_their_batch(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", "pi4")
    event = {"plugin": "room", "alert": "room.hot", "state": "raised"}
    box.append(readings(1), alerts=[event])
    box.append(readings(2))
    first, second = box.peek(2)
    assert first["alerts"] == [event] and "alerts" not in second


def fill_to_refusal(box: Outbox) -> int:
    """Cap the outbox file at its current size (SQLITE_FULL, as on a full disk); returns appends until refused."""
    (pages,) = box._db.execute("PRAGMA page_count").fetchone()
    box._db.execute(f"PRAGMA max_page_count = {pages}")
    for n in range(1, 10_000):
        if box.append(readings(float(n % 50))) is None:
            return n
    raise AssertionError("the capped outbox never refused a write")


def test_outbox_full_disk_holds_batches_in_memory_and_writes_them_in_order_later(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="actors.spoke.outbox")
    box = Outbox(tmp_path / "o.sqlite3", "pi4")
    box.append(readings(1.0))
    n = fill_to_refusal(box)
    for v in (2.0, 3.0):
        assert box.append(readings(v)) is None
    stats = box.stats()
    assert stats["disk_full"] and "full" in stats["disk_error"]
    assert stats["held_in_memory"] == 3 and stats["dropped_batches"] == 0
    assert stats["pending_batches"] == n + 3  # 1 + (n - 1) written, 3 held
    assert sum("outbox cannot write" in r.message for r in caplog.records) == 1  # said once
    box._db.execute("PRAGMA max_page_count = 1000000")  # space returns
    box.retry()
    stats = box.stats()
    assert not stats["disk_full"] and stats["held_in_memory"] == 0 and stats["pending_batches"] == n + 3
    values = [b["readings"][0]["value"] for b in box.peek(n + 3)]
    assert values[-3:] == [float(n % 50), 2.0, 3.0]  # the held ones, in poll order, after the rest
    seqs = [b["seq"] for b in box.peek(n + 3)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert any("accepts writes again" in r.message for r in caplog.records)


def test_outbox_full_disk_memory_is_bounded_and_drops_are_counted(tmp_path, monkeypatch):
    import actors.spoke.outbox as outbox_mod

    monkeypatch.setattr(outbox_mod, "MEMORY_BATCHES", 5)
    box = Outbox(tmp_path / "o.sqlite3", "pi4")
    fill_to_refusal(box)
    for v in range(10):
        box.append(readings(float(v)))
    stats = box.stats()
    assert stats["held_in_memory"] == 5 and stats["dropped_batches"] == 6  # 11 refused, 5 kept
    box._db.execute("PRAGMA max_page_count = 1000000")
    box.retry()
    stats = box.stats()
    assert stats["held_in_memory"] == 0 and stats["dropped_batches"] == 6  # now counted on disk
    assert [b["readings"][0]["value"] for b in box.peek(1000)][-5:] == [5.0, 6.0, 7.0, 8.0, 9.0]
