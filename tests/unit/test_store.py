import sqlite3

import pytest

from actors.errors import BadRequest, StoreFull
from actors.hub.state import Hub
from actors.hub.store import Store
from hal.readings import Reading
from tests.clocks import ManualClock
from tests.helpers import hub_db, wait_for


def batch(node: str, seq: int, ts: float, value: float = 21.0, sensor: str = "dht22") -> dict:
    return {"node": node, "seq": seq, "readings": [
        {"sensor": sensor, "quantity": "temperature", "value": value, "unit": "°C", "ts": ts},
        {"sensor": sensor, "quantity": "humidity", "value": 40.0, "unit": "%", "ts": ts}]}


@pytest.fixture
def hub(tmp_path):
    clock = ManualClock(1_729_000_000.0)
    h = Hub(Store(tmp_path / "hub.sqlite3"), clock)
    h.clock = clock
    yield h
    h.store.close()


def test_store_push_is_idempotent_on_node_and_seq(hub):
    first = hub.push([batch("pi4", 1, 1_728_999_990.0), batch("pi4", 2, 1_728_999_995.0)])
    again = hub.push([batch("pi4", 2, 1_728_999_995.0), batch("pi4", 1, 1_728_999_990.0)])
    assert first == {"acked": [1, 2], "duplicates": 0, "hello": ["pi4"]}
    assert again["acked"] == [2, 1] and again["duplicates"] == 2 and again["hello"] == []
    assert hub.store.count("pi4") == 4


def test_store_rejected_call_stores_nothing(hub):
    bad = batch("pi4", 2, 1_728_999_990.0)
    bad["readings"][1]["unit"] = "K"
    with pytest.raises(BadRequest, match="humidity is measured in '%'"):
        hub.push([batch("pi4", 1, 1_728_999_990.0), bad])
    assert hub.store.count() == 0 and hub.rejected == 1
    with pytest.raises(BadRequest, match="in the future"):
        hub.push([batch("pi4", 1, 1_729_000_000.0 + 2 * 86400)])


def test_store_survives_restart_with_seq_and_latest(tmp_path):
    clock = ManualClock(1_729_000_000.0)
    hub = Hub(Store(tmp_path / "h.sqlite3"), clock)
    hub.hello({"node": "pi4", "role": "spoke", "profile": "native", "push_interval": 2.0})
    hub.push([batch("pi4", 1, 1_728_999_990.0, 20.0), batch("pi4", 2, 1_728_999_999.0, 22.5)])
    hub.store.close()
    again = Hub(Store(tmp_path / "h.sqlite3"), clock)
    assert again.hello({"node": "pi4", "role": "spoke", "profile": "native"}) == {"last_seq": 2}
    assert again.push([batch("pi4", 2, 1_728_999_999.0)])["duplicates"] == 1
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
    hub.push([batch("pi4", 2, 1_728_999_999.0, 25.0)])
    hub.push([{"node": "pi4", "seq": 3, "readings": [
        {"sensor": "dht22", "quantity": "temperature", "value": 19.0, "unit": "°C", "ts": 1_728_999_900.0}]}])
    assert hub.snapshot()["nodes"][0]["sensors"]["dht22"]["temperature"]["value"] == 25.0


def test_a_push_of_several_nodes_batches_updates_each_node_once_in_order(hub):
    hub.hello({"node": "pi3"})
    hub.hello({"node": "pi4"})
    answer = hub.push([batch("pi4", 3, 1_728_999_999.0, 25.0), batch("pi3", 7, 1_728_999_990.0, 18.0),
                       batch("pi4", 2, 1_728_999_995.0, 23.0), batch("pi3", 8, 1_728_999_991.0, 19.0)])
    assert answer == {"acked": [3, 7, 2, 8], "duplicates": 0, "hello": []}
    assert hub.hello({"node": "pi4"}) == {"last_seq": 3} and hub.hello({"node": "pi3"}) == {"last_seq": 8}
    latest = {n["name"]: n["sensors"]["dht22"]["temperature"]["value"] for n in hub.snapshot()["nodes"]}
    assert latest == {"pi3": 19.0, "pi4": 25.0}  # pi4's seq 2 came later in the call but is older


def test_store_flags_a_skewed_clock(hub):
    hub.hello({"node": "pi4"}, sent_at=hub.clock.t + 120)
    node = hub.snapshot()["nodes"][0]
    assert node["clock_offset"] == 120 and node["clock_ok"] is False
    hub.push([batch("pi4", 1, hub.clock.t)], sent_at=hub.clock.t + 0.2)
    assert hub.snapshot()["nodes"][0]["clock_ok"] is True


def test_store_rollups_include_late_readings(hub):
    t0 = 1_729_000_020.0  # inside the minute starting at 1_729_000_020 - 20 = 1_728_999_960 + 60
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
    assert [n["last_seq"] for n in hub.store.nodes() if n["name"] == "pi4"] == [2]
    with hub.store._lock:
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


class FullDisk:
    """The store's connection, answering every write with SQLITE_FULL once `full` is set."""

    def __init__(self, db) -> None:
        self.db, self.full = db, False

    def __getattr__(self, name):
        return getattr(self.db, name)

    def _check(self, sql: str) -> None:
        if self.full and sql.split()[0].upper() not in ("BEGIN", "ROLLBACK", "COMMIT", "SELECT"):
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql, *args):
        self._check(sql)
        return self.db.execute(sql, *args)

    def executemany(self, sql, *args):
        self._check(sql)
        return self.db.executemany(sql, *args)


def assert_store_full(exc: StoreFull, store: Store) -> None:
    text = str(exc)
    assert f"hub store {store.path} is full" in text and "database or disk is full" in text
    assert "pushes are refused" in text and "outboxes" in text
    assert "free disk space" in text and "store.max_mb" in text


def test_store_every_write_turns_a_full_disk_into_one_clear_store_full(hub):
    t = hub.clock.t
    hub.push([{**batch("pi4", 1, t - 7200), "alerts": [alert_event("raised", t)]}])
    [active] = hub.alerts()
    store = hub.store
    before = store.count()
    store._db = FullDisk(store._db)
    store._db.full = True
    writes = {
        "commit_batches": lambda: hub.push([batch("pi4", 2, t)]),
        "insert_local": lambda: hub.ingest_local("pi4", [Reading.measured("pi4", "monitor", "cpu_load", 1.0, t)]),
        "record_alerts": lambda: hub.record_alerts("pi4", [alert_event("cleared", t)]),
        "acknowledge": lambda: hub.acknowledge(active["id"], by="operator"),
        "upsert_node": lambda: store.upsert_node("pi5", "spoke", "wasm", 5.0, t, None, {}),
        "rollup": store.rollup,
        "daily_summary": lambda: store.daily_summary(t - 86400, t, "1970-01-12"),
        "retain": lambda: store.retain(raw_days=0, rollup_days=0, now=t),
    }
    for name, write in writes.items():
        with pytest.raises(StoreFull) as info:
            write()
        assert_store_full(info.value, store)
        assert not store._db.in_transaction, name  # rolled back, not left open
    # the indexer reporting its progress while the disk is full: its rows wait for a later
    # prune, and the thread that reads its reports goes on (it died here once, and the hub
    # then hung at its stop with the indexer blocked on a full pipe)
    store._durable(store._pruned + 1_000_000)
    assert not store._db.in_transaction
    store._db.full = False
    assert store.count() == before and hub.alerts()[0]["acknowledged"] is False
    assert store.nodes()[0]["name"] == "pi4" and len(store.nodes()) == 1
    assert hub.push([batch("pi4", 2, t)])["duplicates"] == 0  # space returns: writes work again


def test_store_every_write_runs_in_one_transaction(hub, monkeypatch):
    """Retention and housekeeping too: each write is one BEGIN ... COMMIT."""
    opened: list[str] = []
    real = hub.store._transaction

    def spy(**kwargs):
        opened.append("tx")
        return real(**kwargs)

    monkeypatch.setattr(hub.store, "_transaction", spy)
    t = hub.clock.t
    hub.push([batch("pi4", 1, t)])  # a new node: its registry row goes in with its batches
    assert len(opened) == 1
    for write in (lambda: hub.ingest_local("pi4", [Reading.measured("pi4", "monitor", "cpu_load", 1.0, t)]),
                  lambda: hub.record_alerts("pi4", [alert_event("raised", t)]),
                  lambda: hub.acknowledge(hub.alerts()[0]["id"], by="operator"),
                  hub.store.rollup,
                  lambda: hub.store.daily_summary(t - 86400, t + 1, "1970-01-12"),
                  lambda: hub.store.retain(raw_days=7, rollup_days=9, now=t)):
        before = len(opened)
        write()
        assert len(opened) == before + 1


def test_store_a_real_size_cap_refuses_with_store_full(tmp_path):
    hub = Hub(Store(tmp_path / "hub.sqlite3", max_mb=0.1), ManualClock(1_729_000_000.0))
    refused = None
    for seq in range(1, 1000):
        readings = [{"sensor": f"x{i}", "quantity": "temperature", "value": 20.0, "unit": "°C", "ts": 1_728_999_999.0}
                    for i in range(50)]
        try:
            hub.push([{"node": "s1", "seq": seq, "readings": readings}])
        except StoreFull as exc:
            refused = exc
            break
    assert refused is not None
    assert_store_full(refused, hub.store)
    assert hub.store.count("s1") == 50 * (seq - 1)  # the refused batch left nothing behind
    hub.store.close()


def test_the_size_cap_holds_for_the_store_and_its_samples_file_together(tmp_path):
    from actors.hub.indexer import data_path

    path = tmp_path / "hub.sqlite3"
    hub = Hub(Store(path, max_mb=1.0), ManualClock(1_729_000_000.0))
    pushed = 0
    for seq in range(1, 1000):
        readings = [{"sensor": f"x{i % 50}", "quantity": "temperature", "value": 20.0 + i / 1000, "unit": "°C",
                     "ts": 1_728_990_000.0 + seq + i / 1000} for i in range(500)]
        try:
            hub.push([{"node": "s1", "seq": seq, "readings": readings}])
        except StoreFull:
            break
        pushed += 500
        hub.store.flush()  # the readings go on into the samples file, which holds most of them
    hub.store.close()
    with sqlite3.connect(path) as db:
        (main,) = db.execute("PRAGMA page_count").fetchone()
        (page,) = db.execute("PRAGMA page_size").fetchone()
    with sqlite3.connect(data_path(path)) as db:
        (data,) = db.execute("PRAGMA page_count").fetchone()
    assert pushed > 5000 and data > 50  # it filled, samples too
    assert (main + data) * page <= 1.0 * 1024 * 1024 + 16 * page  # (a push's or a move's pages at most)
    again = Store(path)
    assert again.count("s1") == pushed  # nothing acknowledged was lost
    again.close()


def test_hub_reads_history_alerts_and_summaries_for_the_web_layer(hub):
    t = hub.clock.t
    hub.push([{**batch("pi4", 1, t - 10, 20.0), "alerts": [alert_event("raised", t - 10)]},
              {**batch("pi4", 2, t - 5, 22.0), "alerts": [alert_event("cleared", t - 5, since=t - 10),
                                                          alert_event("raised", t - 5, alert="other")]}])
    assert hub.history("pi4", "dht22", "temperature", t - 60, t, "raw") == [[t - 10, 20.0], [t - 5, 22.0]]
    assert hub.history("pi4", "dht22", "temperature", t - 60, t, "raw", limit=1) == [[t - 10, 20.0]]
    assert len(hub.alerts(active_only=False)) == 2 and len(hub.alerts(active_only=False, limit=1)) == 1
    assert hub.store.daily_summary(t - 60, t, "1970-01-12") == 2
    assert [(s["quantity"], s["n"]) for s in hub.summaries("1970-01-12")] == [("humidity", 2), ("temperature", 2)]
    assert hub.summaries(limit=1)[0]["day"] == "1970-01-12" and hub.summaries("1970-01-13") == []


def test_checked_batches_and_rows_are_named_tuples():
    from actors.hub.ingest import to_row, validate_batch
    from actors.hub.store import Batch, Row

    b = validate_batch(batch("pi4", 3, 1_728_999_990.0, 20.5), 1_729_000_000.0)
    assert isinstance(b, Batch) and (b.node, b.seq, b.alerts) == ("pi4", 3, [])
    row = b.rows[0]
    assert type(row) is Row and row == ("dht22", "temperature", 20.5, "°C", 1_728_999_990.0, "ok", None)
    assert (row.sensor, row.quantity, row.value, row.unit, row.ts, row.quality, row.reason) == tuple(row)
    reading = Reading("pi4", *row)  # a Row is still the tuple Reading's fields follow
    assert type(to_row(reading)) is Row and to_row(reading) == row


# -- the ingest log: acknowledged as one row per push, moved into samples (the file beside the
# store's) by the indexer process behind the acknowledgement
def samples_and_log(path) -> tuple[int, int]:
    """(readings in samples, log rows the indexer has not moved)."""
    from actors.hub.indexer import data_path

    with sqlite3.connect(path) as db:
        db.execute("ATTACH ? AS data", (str(data_path(path)),))
        (moved,) = db.execute("SELECT log_id FROM data.moved").fetchone()
        return (db.execute("SELECT COUNT(*) FROM data.samples").fetchone()[0],
                db.execute("SELECT COUNT(*) FROM ingest_log WHERE id > ?", (moved,)).fetchone()[0])


@pytest.fixture
def reader_driven(monkeypatch):
    """The indexer process starts and moves only when a reader waits (not on each push)."""
    from actors.hub.indexer import IndexerProcess

    real = IndexerProcess.wake
    monkeypatch.setattr(IndexerProcess, "wake", lambda self, now=False, upto=0: real(self, now, upto) if now else None)


def test_a_push_is_acknowledged_once_its_batches_are_logged_and_queries_see_them_at_once(tmp_path, reader_driven):
    path = tmp_path / "hub.sqlite3"
    hub = Hub(Store(path), ManualClock(1_729_000_000.0))
    assert hub.push([batch("pi4", 1, 1_728_999_990.0, 20.0), batch("pi4", 2, 1_728_999_995.0, 21.0)])["acked"] == [1, 2]
    assert samples_and_log(path) == (0, 1)  # durable as one log row for the push, not yet indexed
    assert hub.store.unmoved() == 1  # (/metrics: harvester_hub_unindexed_pushes)
    assert hub.snapshot()["nodes"][0]["sensors"]["dht22"]["temperature"]["value"] == 21.0  # latest: in memory
    # a query waits for the indexer first: it answers as if the push had inserted every reading
    assert hub.history("pi4", "dht22", "temperature", 1_728_999_900.0, 1_729_000_000.0, "raw") == \
        [[1_728_999_990.0, 20.0], [1_728_999_995.0, 21.0]]
    assert samples_and_log(path) == (4, 0)
    assert hub.store.count("pi4") == 4 and hub.store.unmoved() == 0
    hub.store.close()


def test_batches_logged_before_a_crash_are_moved_at_the_next_start(tmp_path, reader_driven):
    path = tmp_path / "hub.sqlite3"
    crashed = Hub(Store(path), ManualClock(1_729_000_000.0))
    crashed.push([batch("pi4", 1, 1_728_999_990.0, 20.0)])
    crashed.push([batch("pi4", 2, 1_728_999_995.0, 21.0)])
    assert samples_and_log(path) == (0, 2)
    crashed.store._indexer.close()  # the hub dies here (and its indexer with it): never closed, never indexed
    hub = Hub(Store(path), ManualClock(1_729_000_000.0))
    assert samples_and_log(path) == (4, 0)  # the restart moved them while warming its view
    assert hub.store.count("pi4") == 4 and hub.snapshot()["nodes"][0]["last_seq"] == 2
    assert hub.push([batch("pi4", 2, 1_728_999_995.0, 21.0)])["duplicates"] == 1  # still idempotent
    assert hub.history("pi4", "dht22", "temperature", 1_728_999_900.0, 1_729_000_000.0, "raw") == \
        [[1_728_999_990.0, 20.0], [1_728_999_995.0, 21.0]]
    hub.store.close()
    crashed.store._db.close()


def test_the_indexer_moves_logged_batches_without_any_reader(tmp_path):
    path = tmp_path / "hub.sqlite3"
    hub = Hub(Store(path), ManualClock(1_729_000_000.0))
    for seq in range(1, 21):
        hub.push([batch("pi4", seq, 1_728_999_000.0 + seq)])
    wait_for(lambda: samples_and_log(path) == (40, 0), timeout=10, what="the indexer to move the log")
    hub.store.close()
    with sqlite3.connect(path) as db:  # a clean stop leaves no log, and the next start numbers it from 1
        assert db.execute("SELECT COUNT(*) FROM ingest_log").fetchone() == (0,)


def test_a_killed_indexer_is_started_again_and_moves_the_rest(tmp_path):
    path = tmp_path / "hub.sqlite3"
    hub = Hub(Store(path), ManualClock(1_729_000_000.0))
    hub.push([batch("pi4", 1, 1_728_999_001.0)])
    assert hub.store.count("pi4") == 2
    first = hub.store._indexer._proc
    first.kill()
    first.wait()
    hub.push([batch("pi4", 2, 1_728_999_002.0)])
    assert hub.store.count("pi4") == 4  # waits for the new process, started a second after the death
    assert hub.store._indexer._proc.pid != first.pid
    wait_for(lambda: hub.store.indexer_errors() == 1, timeout=10, what="the death counted (harvester_hub_indexer_errors_total)")
    hub.store.close()


def test_a_reader_from_outside_sees_logged_and_indexed_readings_once(tmp_path, reader_driven):
    path = tmp_path / "hub.sqlite3"
    hub = Hub(Store(path), ManualClock(1_729_000_000.0))
    hub.push([batch("pi4", 1, 1_728_999_990.0)])
    assert hub.store.flush()
    hub.store._indexer.close()  # from here on, pushes stay in the log
    hub.push([batch("pi4", 2, 1_728_999_995.0)])
    assert samples_and_log(path) == (2, 1)
    db = hub_db(path)
    assert db.execute("SELECT seq, COUNT(*) FROM readings WHERE node='pi4' GROUP BY seq").fetchall() == [(1, 2), (2, 2)]
    db.close()
    hub.store.close()
    Store(path).close()  # the next start moves what was left, and a clean stop leaves no log
    assert samples_and_log(path) == (4, 0)


def test_a_backlog_is_logged_compressed_and_every_reader_unpacks_both_forms(tmp_path, reader_driven):
    from actors.hub.indexer import COMPRESS_FROM

    path = tmp_path / "hub.sqlite3"
    hub = Hub(Store(path), ManualClock(1_729_000_000.0))
    backlog = [batch("pi4", seq, 1_728_990_000.0 + seq, value=20.0 + seq % 7) for seq in range(1, 201)]
    hub.push(backlog)  # a drained outbox: 200 batches, 400 readings
    hub.push([batch("pi4", 201, 1_728_999_990.0, 19.5)])  # a node keeping up: a few hundred bytes
    with sqlite3.connect(path) as db:
        large, small = [blob for (blob,) in db.execute("SELECT batches FROM ingest_log ORDER BY id")]
    assert large[:1] == b"x" and len(large) < COMPRESS_FROM < 8 * len(large)  # zlib: 4 kB is under a fifth of it
    assert small[:1] != b"x" and len(small) < COMPRESS_FROM
    hub.store._indexer.close()  # from here on, both rows stay in the log
    assert hub.store.count("pi4") == 402  # counted from the log, unpacked
    outside = hub_db(path)  # and from outside
    assert outside.execute("SELECT COUNT(*), SUM(value) FROM readings WHERE quantity='temperature'").fetchone() == \
        (201, sum(20.0 + seq % 7 for seq in range(1, 201)) + 19.5)
    outside.close()
    hub.store.close()
    again = Store(path)  # the next start's indexer moves them, for the first query at the latest
    assert again.history("pi4", "dht22", "temperature", 1_728_990_000.0, 1_729_000_000.0, "raw")[:2] == \
        [[1_728_990_001.0, 21.0], [1_728_990_002.0, 22.0]]
    assert samples_and_log(path) == (402, 0)
    again.close()


def test_a_backlog_checked_in_columns_gets_its_own_nodes_series(hub):
    """The column path hands the store the push's series: they must be this node's, though
    another node's first push made them known."""
    from actors.hub.ingest import _whole_push

    t = 1_729_000_000.0
    hub.push([batch("pi4", 1, t - 1)])
    backlog = [batch("pi3", seq, t - 1000 + seq, value=20.0 + seq % 7) for seq in range(1, 51)]
    assert _whole_push(backlog, t) is not None
    hub.push(backlog)
    points = hub.history("pi3", "dht22", "temperature", t - 1000, t, "raw")
    assert points == [[t - 1000 + seq, 20.0 + seq % 7] for seq in range(1, 51)]
    assert len(hub.history("pi3", "dht22", "humidity", t - 1000, t, "raw")) == 50


def test_a_version_2_store_is_migrated_with_its_readings_and_its_logged_batches(tmp_path):
    """Before the samples file: samples in the store's own file, a log row per batch with series ids."""
    import msgpack

    from actors.hub.indexer import data_path

    path = tmp_path / "hub.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE series (id INTEGER PRIMARY KEY, node TEXT NOT NULL, sensor TEXT NOT NULL,
            quantity TEXT NOT NULL, unit TEXT NOT NULL, UNIQUE (node, sensor, quantity));
        CREATE TABLE samples (id INTEGER PRIMARY KEY, series INTEGER NOT NULL REFERENCES series (id),
            ts REAL NOT NULL, value REAL, quality TEXT NOT NULL, reason TEXT, seq INTEGER NOT NULL,
            received REAL NOT NULL);
        CREATE INDEX samples_series_ts ON samples (series, ts);
        CREATE VIEW readings AS SELECT s.node, x.ts FROM samples x JOIN series s ON s.id = x.series;
        CREATE TABLE node_seq (node TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
        CREATE TABLE ingest_log (id INTEGER PRIMARY KEY, node TEXT NOT NULL, seq INTEGER NOT NULL,
            received REAL NOT NULL, rows BLOB NOT NULL);
        INSERT INTO series VALUES (1, 'pi4', 'dht22', 'temperature', '°C');
        INSERT INTO samples VALUES (7, 1, 1728999990.0, 20.0, 'ok', NULL, 1, 1729000000.0);
        INSERT INTO node_seq VALUES ('pi4', 2);
        PRAGMA user_version = 2;
    """)
    db.execute("INSERT INTO ingest_log VALUES (1, 'pi4', 2, 1729000000.0, ?)",
               (msgpack.packb([[1, 1_728_999_995.0, 21.0, "ok", None]]),))
    db.commit()
    db.close()
    hub = Hub(Store(path), ManualClock(1_729_000_000.0))
    assert hub.history("pi4", "dht22", "temperature", 1_728_999_900.0, 1_729_000_000.0, "raw") == \
        [[1_728_999_990.0, 20.0], [1_728_999_995.0, 21.0]]
    assert hub.push([batch("pi4", 2, 1_728_999_995.0)])["duplicates"] == 1
    hub.push([batch("pi4", 3, 1_728_999_998.0, 22.0)])
    assert hub.store.count("pi4") == 4
    hub.store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (3,)
        assert db.execute("SELECT name FROM sqlite_master WHERE name IN ('samples', 'readings')").fetchall() == []
    with sqlite3.connect(data_path(path)) as db:
        assert db.execute("SELECT id, value FROM samples ORDER BY id LIMIT 1").fetchone() == (7, 20.0)


def test_pushes_arriving_during_a_commit_go_together_and_each_gets_its_own_answer(tmp_path, monkeypatch):
    import threading

    store = Store(tmp_path / "hub.sqlite3")
    hub = Hub(store, ManualClock(1_729_000_000.0))
    commits, release, first_in = [], threading.Event(), threading.Event()
    write = Store._write_group

    def slow_write(self, group):
        commits.append(len(group))
        first_in.set()
        release.wait(10)  # the first group's fsync, taking its time
        return write(self, group)

    monkeypatch.setattr(Store, "_write_group", slow_write)
    answers: dict[str, dict] = {}
    first = threading.Thread(target=lambda: answers.update(a=hub.push([batch("a", 1, 1_728_999_990.0)])))
    first.start()
    assert first_in.wait(10)
    others = [threading.Thread(target=lambda n=n: answers.update({n: hub.push([batch(n, 1, 1_728_999_990.0)])}))
              for n in ("b", "c", "d")]
    for t in others:
        t.start()
    wait_for(lambda: len(store._queue) == 3, timeout=10, what="three pushes waiting for the commit")
    release.set()
    for t in (first, *others):
        t.join(10)
    assert commits == [1, 3]  # one transaction for the three that waited
    assert all(answers[n]["acked"] == [1] and answers[n]["duplicates"] == 0 for n in "abcd")
    assert store.count() == 8
    store.close()


def test_a_group_that_fails_is_retried_push_by_push_so_a_failure_stays_with_its_push(tmp_path, monkeypatch):
    store = Store(tmp_path / "hub.sqlite3")
    from actors.hub import store as store_mod

    write = Store._write_group

    def picky(self, group):
        if any(one.batches[0].node == "bad" for one in group):
            raise StoreFull("no room for this one")
        return write(self, group)

    monkeypatch.setattr(Store, "_write_group", picky)
    good, bad = store_mod._Commit([], 1.0, {}), store_mod._Commit([], 1.0, {})
    good.batches = [store_mod.Batch("ok", 1, [], [])]
    bad.batches = [store_mod.Batch("bad", 1, [], [])]
    store._commit_group([good, bad])
    assert good.result() == [("ok", 1)]
    with pytest.raises(StoreFull, match="no room"):
        bad.result()
    store.close()


def test_a_node_pushing_twice_in_one_group_commit_has_its_second_copy_counted_a_duplicate(tmp_path):
    """The last seqs are kept in memory: within one transaction the second push must see the first's."""
    from actors.hub import store as store_mod

    store = Store(tmp_path / "hub.sqlite3")
    first, again, later = (store_mod._Commit([store_mod.Batch("pi4", seq, [], [])], 1.0, {}) for seq in (1, 1, 2))
    store._commit_group([first, again, later])
    assert (first.result(), again.result(), later.result()) == ([("pi4", 1)], [], [("pi4", 2)])
    with store._lock:
        assert store._db.execute("SELECT node, last_seq FROM node_seq").fetchall() == [("pi4", 2)]
    store.close()
    reopened = Store(tmp_path / "hub.sqlite3")  # and what was committed is what a restart knows
    one = store_mod._Commit([store_mod.Batch("pi4", 2, [], [])], 1.0, {})
    reopened._commit_group([one])
    assert one.result() == []
    reopened.close()


class FailingCommit(FullDisk):
    """The store's connection, failing the COMMIT itself once `full` is set (the writes before it pass)."""

    def _check(self, sql: str) -> None:
        if self.full and sql.split()[0].upper() == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")


def test_a_push_whose_commit_fails_leaves_its_seq_free_for_the_retry(hub):
    t = hub.clock.t
    hub.push([batch("pi4", 1, t)])
    hub.store._db = FailingCommit(hub.store._db)
    hub.store._db.full = True
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        hub.push([batch("pi4", 2, t)])
    hub.store._db.full = False
    assert hub.push([batch("pi4", 2, t)]) == {"acked": [2], "duplicates": 0, "hello": []}
    assert [n["last_seq"] for n in hub.store.nodes()] == [2]


def test_an_hour_is_rolled_up_from_its_minutes_so_it_keeps_readings_raw_retention_dropped(hub):
    hour = 1_728_997_200.0  # an hour boundary (1_728_997_200 = 480_277 h)
    values = {0: [10.0, 20.0], 1: [30.0], 2: [5.0, 6.0, 7.0]}  # minute -> readings
    seq = 0
    for minute, vs in values.items():
        for i, v in enumerate(vs):
            seq += 1
            hub.push([batch("pi4", seq, hour + 60 * minute + i, v)])
    hub.store.rollup()
    every = [v for vs in values.values() for v in vs]
    (h,) = hub.history("pi4", "dht22", "temperature", hour, hour + 3600, "1h")
    assert h[0] == hour and h[1] == 5.0 and h[3] == 30.0 and h[2] == pytest.approx(sum(every) / len(every))
    with hub.store._lock:  # raw retention took minute 0's readings; its minute rollup stays
        hub.store._db.execute("DELETE FROM samples WHERE ts < ?", (hour + 60,))
    hub.push([batch("pi4", seq + 1, hour + 600, 40.0)])  # a late reading in the same hour
    hub.store.rollup()
    (h,) = hub.history("pi4", "dht22", "temperature", hour, hour + 3600, "1h")
    every.append(40.0)
    assert h[1] == 5.0 and h[3] == 40.0 and h[2] == pytest.approx(sum(every) / len(every))
