import pytest

from actors.errors import BadRequest
from actors.hub.state import Hub
from actors.hub.store import Store
from hal.readings import Reading
from tests.clocks import ManualClock


def batch(node: str, seq: int, ts: float, value: float = 21.0, sensor: str = "dht22") -> dict:
    return {"node": node, "seq": seq, "readings": [
        {"sensor": sensor, "quantity": "temperature", "value": value, "unit": "°C", "ts": ts},
        {"sensor": sensor, "quantity": "humidity", "value": 40.0, "unit": "%", "ts": ts}]}


@pytest.fixture
def hub(tmp_path):
    clock = ManualClock(1_000_000.0)
    h = Hub(Store(tmp_path / "hub.sqlite3"), clock)
    h.clock = clock
    yield h
    h.store.close()


def test_store_push_is_idempotent_on_node_and_seq(hub):
    first = hub.push([batch("pi4", 1, 999_990.0), batch("pi4", 2, 999_995.0)])
    again = hub.push([batch("pi4", 2, 999_995.0), batch("pi4", 1, 999_990.0)])
    assert first == {"acked": [1, 2], "duplicates": 0, "hello": ["pi4"]}
    assert again["acked"] == [2, 1] and again["duplicates"] == 2 and again["hello"] == []
    assert hub.store.count("pi4") == 4


def test_store_rejected_call_stores_nothing(hub):
    bad = batch("pi4", 2, 999_990.0)
    bad["readings"][1]["unit"] = "K"
    with pytest.raises(BadRequest, match="humidity is measured in '%'"):
        hub.push([batch("pi4", 1, 999_990.0), bad])
    assert hub.store.count() == 0 and hub.rejected == 1
    with pytest.raises(BadRequest, match="in the future"):
        hub.push([batch("pi4", 1, 1_000_000.0 + 2 * 86400)])


def test_store_survives_restart_with_seq_and_latest(tmp_path):
    clock = ManualClock(1_000_000.0)
    hub = Hub(Store(tmp_path / "h.sqlite3"), clock)
    hub.hello({"node": "pi4", "role": "spoke", "profile": "native", "push_interval": 2.0})
    hub.push([batch("pi4", 1, 999_990.0, 20.0), batch("pi4", 2, 999_999.0, 22.5)])
    hub.store.close()
    again = Hub(Store(tmp_path / "h.sqlite3"), clock)
    assert again.hello({"node": "pi4", "role": "spoke", "profile": "native"}) == {"last_seq": 2}
    assert again.push([batch("pi4", 2, 999_999.0)])["duplicates"] == 1
    [node] = again.snapshot()["nodes"]
    assert node["profile"] == "native" and node["sensors"]["dht22"]["temperature"]["value"] == 22.5


def test_store_liveness_and_staleness_follow_the_clock(hub):
    hub.hello({"node": "pi4", "push_interval": 2.0, "stale_after": {"dht22": 5.0}})
    hub.push([batch("pi4", 1, hub.clock.t)])
    node = hub.snapshot()["nodes"][0]
    assert node["online"] and not node["sensors"]["dht22"]["temperature"]["stale"]
    hub.clock.t += 5.5
    node = hub.snapshot()["nodes"][0]
    assert node["online"] and node["sensors"]["dht22"]["temperature"]["stale"]
    hub.clock.t += 1.0  # 6.5 s > 3 push intervals of 2 s
    assert not hub.snapshot()["nodes"][0]["online"]


def test_store_backfill_does_not_hide_a_newer_value(hub):
    hub.push([batch("pi4", 2, 999_999.0, 25.0)])
    hub.push([{"node": "pi4", "seq": 3, "readings": [
        {"sensor": "dht22", "quantity": "temperature", "value": 19.0, "unit": "°C", "ts": 999_900.0}]}])
    assert hub.snapshot()["nodes"][0]["sensors"]["dht22"]["temperature"]["value"] == 25.0


def test_store_flags_a_skewed_clock(hub):
    hub.hello({"node": "pi4"}, sent_at=hub.clock.t + 120)
    node = hub.snapshot()["nodes"][0]
    assert node["clock_offset"] == 120 and node["clock_ok"] is False
    hub.push([batch("pi4", 1, hub.clock.t)], sent_at=hub.clock.t + 0.2)
    assert hub.snapshot()["nodes"][0]["clock_ok"] is True


def test_store_rollups_include_late_readings(hub):
    t0 = 1_000_020.0  # inside the minute starting at 1_000_020 - 20 = 999_960 + 60
    bucket = (t0 // 60) * 60
    hub.push([batch("pi4", 1, t0, 20.0), batch("pi4", 2, t0 + 10, 24.0)])
    hub.clock.t = t0 + 100
    assert hub.store.rollup() > 0
    [[b, lo, mean, hi]] = hub.store.history("pi4", "dht22", "temperature", bucket, bucket + 60, "1m")
    assert (b, lo, mean, hi) == (bucket, 20.0, 22.0, 24.0)
    # a spoke that was offline backfills the same minute later
    hub.push([batch("pi4", 3, t0 + 20, 29.0)])
    hub.store.rollup()
    [[_, lo, mean, hi]] = hub.store.history("pi4", "dht22", "temperature", bucket, bucket + 60, "1m")
    assert (lo, hi) == (20.0, 29.0) and mean == pytest.approx(73 / 3)
    [[_, lo, _, hi]] = hub.store.history("pi4", "dht22", "temperature", bucket - 3600, bucket + 3600, "1h")
    assert (lo, hi) == (20.0, 29.0)


def test_store_retention_deletes_only_old_rows(hub):
    now = hub.clock.t
    hub.push([batch("pi4", 1, now - 10 * 86400), batch("pi4", 2, now - 60)])
    hub.store.rollup()
    result = hub.store.retain(raw_days=7, rollup_days=9, now=now)
    assert result["raw_deleted"] == 2 and result["rollups_deleted"] > 0
    assert [p[1] for p in hub.store.history("pi4", "dht22", "temperature", now - 30 * 86400, now, "raw")] == [21.0]


def test_store_local_readings_count_as_hub_liveness(hub):
    hub.ingest_local("hub", [Reading.measured("hub", "monitor", "cpu_load", 12.0, hub.clock.t)])
    [node] = hub.snapshot()["nodes"]
    assert node["role"] == "hub" and node["online"] and hub.store.count("hub") == 1


def alert_event(state: str, ts: float, **kw) -> dict:
    e = {"plugin": "room_temperature", "version": "1.0.0", "alert": "room_temperature.pi4.dht22", "state": state,
         "severity": "warning", "message": f"{state} at {ts}", "node": "pi4", "raised_by": "pi4",
         "sensor": "dht22", "quantity": "temperature", "value": 31.0, "ts": ts, "since": ts}
    e.update(kw)
    return e


def test_store_alerts_ride_with_batches_and_keep_history(hub):
    t = hub.clock.t
    hub.push([{**batch("pi4", 1, t), "alerts": [alert_event("raised", t)]}])
    hub.push([{**batch("pi4", 1, t), "alerts": [alert_event("raised", t)]}])  # a retry: no second alert
    [active] = hub.alerts()
    assert (active["plugin"], active["node"], active["severity"], active["acknowledged"]) == \
        ("room_temperature", "pi4", "warning", False)
    acked = hub.acknowledge(active["id"], by="operator")
    assert acked["acknowledged"] and acked["acked_by"] == "operator"
    assert hub.acknowledge(9999, by="operator") is None
    hub.push([{**batch("pi4", 2, t + 5), "alerts": [alert_event("cleared", t + 5, since=t)]}])
    assert hub.alerts() == [] and hub.alerts(active_only=False)[0]["active"] is False
    assert [e["state"] for e in hub.store.alert_history(0)] == ["cleared", "raised"]


def test_store_bad_alert_event_rejects_the_whole_batch(hub):
    with pytest.raises(BadRequest, match="bad alert field 'severity'"):
        hub.push([{**batch("pi4", 1, hub.clock.t), "alerts": [alert_event("raised", hub.clock.t, severity="doom")]}])
    with pytest.raises(BadRequest, match="bad alert field 'raised_by'"):
        hub.push([{**batch("pi4", 1, hub.clock.t), "alerts": [alert_event("raised", hub.clock.t, raised_by="x")]}])
    assert hub.store.count() == 0 and hub.alerts() == []


def test_store_alert_only_batch_is_accounted_for_by_its_seq(hub):
    t = hub.clock.t
    hub.push([batch("pi4", 1, t), {"node": "pi4", "seq": 2, "readings": [], "alerts": [alert_event("raised", t)]}])
    with hub.store._lock:
        assert hub.store._last_seqs({"pi4"}) == {"pi4": 2}
        rows = hub.store._db.execute("SELECT raised_by, state, seq FROM alert_events").fetchall()
    assert rows == [("pi4", "raised", 2)]


def test_store_adds_new_columns_in_place_and_refuses_unknown_versions(tmp_path):
    """A file from before alert_events.seq gains the column and keeps its rows and its schema
    version, so the previous release still opens it after a rollback."""
    import sqlite3

    from actors.hub import store as store_mod

    path = tmp_path / "old.sqlite3"
    old = store_mod.SCHEMA.replace(",\n    seq INTEGER  -- the batch", "\n    -- the batch")
    assert old != store_mod.SCHEMA
    db = sqlite3.connect(path)
    db.executescript(old)
    db.execute("INSERT INTO alert_events (raised_by, plugin, alert, state, severity, message, node, ts, since, "
               "received) VALUES ('pi4', 'p', 'a', 'raised', 'warning', 'm', 'pi4', 1, 1, 1)")
    db.execute(f"PRAGMA user_version = {store_mod.SCHEMA_VERSION}")
    db.commit()
    db.close()
    s = Store(path)
    assert s._db.execute("PRAGMA user_version").fetchone() == (store_mod.SCHEMA_VERSION,)
    assert s._db.execute("SELECT raised_by, seq FROM alert_events").fetchall() == [("pi4", None)]
    s.close()
    Store(path).close()  # opening it again changes nothing
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(store_mod.StoreSchemaError, match=f"schema 99, this hub needs {store_mod.SCHEMA_VERSION}"):
        Store(path)
