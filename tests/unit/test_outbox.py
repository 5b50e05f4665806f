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
    assert box.stats() == {"pending_batches": 1, "dropped_batches": 0}


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
    assert box.stats() == {"pending_batches": 3, "dropped_batches": 2}


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
