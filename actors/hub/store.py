"""The hub's SQLite store: raw readings, per-node sequence state, the node registry,
1-minute and 1-hour rollups, alert events. One writer connection, WAL, one commit per push.

A push commits its new batches as one row of `ingest_log` (their checked readings packed with
msgpack), with the node's seq, in one `synchronous=FULL` transaction, and is acknowledged
after it. The readings themselves, with their (series, ts) index, live in a second file
beside the store's (`hub.samples.sqlite3` beside `hub.sqlite3`), which the indexer process
(actors.hub.indexer) fills from the log behind the acknowledgement. This connection attaches
that file as `data`, so every query names `samples` as before. A crash leaves the log rows not
yet durably moved, and the indexer moves them at the next start. Every query that reads
`samples` first waits until what was logged is moved, so the store answers as if each push
had inserted its readings itself.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import msgpack

from actors.errors import StoreFull
from actors.hub.holdings import Interval, SeqSet
from actors.hub.housekeeping import STEPS, StoreHousekeeping
from actors.hub.indexer import (
    DATA_SCHEMA,
    INSERT_SAMPLE,
    IndexerProcess,
    data_path,
    pack_logged,
    unpack_logged,
)
from actors.hub.notify_log import NotifyLog

# 3: samples moved to the file beside the store's (a version-2 store is migrated at open; the
# previous release refuses a version-3 store instead of showing it without its readings)
SCHEMA_VERSION = 3
MIGRATES_FROM = 2
# Columns added since the schema version last changed, added in place where missing. An
# added column keeps the version, so the previous release still opens the file when a
# deploy rolls back to it (its statements name their columns; the new one is left NULL).
ADDED_COLUMNS = {
    # events that came in a batch keep its seq, so an alert-only batch is accounted for
    ("alert_events", "seq"): "INTEGER",
}
INGEST_LOG = "CREATE TABLE IF NOT EXISTS ingest_log (id INTEGER PRIMARY KEY, received REAL NOT NULL, batches BLOB NOT NULL)"
SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY, node TEXT NOT NULL, sensor TEXT NOT NULL, quantity TEXT NOT NULL,
    unit TEXT NOT NULL, UNIQUE (node, sensor, quantity)
);
CREATE TABLE IF NOT EXISTS node_seq (node TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
-- What each push logged, until the indexer has durably moved it into samples (the newest row
-- stays, so that ids are never reused): batches = msgpack [[node, seq, [[sensor, quantity,
-- value, unit, ts, quality, reason], ...]], ...], one row per push, zlib-compressed when
-- large (actors.hub.indexer.pack_logged)
@INGEST_LOG@;
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, profile TEXT NOT NULL, push_interval REAL NOT NULL,
    last_seen REAL, clock_offset REAL, info TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS rollups (
    step INTEGER NOT NULL, series INTEGER NOT NULL, bucket REAL NOT NULL,
    min REAL NOT NULL, mean REAL NOT NULL, max REAL NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (step, series, bucket)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS alert_events (
    id INTEGER PRIMARY KEY, raised_by TEXT NOT NULL, plugin TEXT NOT NULL, alert TEXT NOT NULL,
    state TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL, node TEXT NOT NULL,
    sensor TEXT, quantity TEXT, value REAL, ts REAL NOT NULL, since REAL NOT NULL, received REAL NOT NULL,
    seq INTEGER  -- the batch (from `raised_by`) that carried it; NULL for the hub's own plugins
);
CREATE INDEX IF NOT EXISTS alert_events_ts ON alert_events (ts);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, raised_by TEXT NOT NULL, plugin TEXT NOT NULL, alert TEXT NOT NULL,
    severity TEXT NOT NULL, message TEXT NOT NULL, node TEXT NOT NULL, sensor TEXT, quantity TEXT,
    value REAL, since REAL NOT NULL, updated REAL NOT NULL, active INTEGER NOT NULL,
    acknowledged INTEGER NOT NULL DEFAULT 0, acked_by TEXT, acked_ts REAL
);
CREATE INDEX IF NOT EXISTS alerts_key ON alerts (raised_by, plugin, alert, active);
CREATE INDEX IF NOT EXISTS alerts_episode ON alerts (raised_by, plugin, alert, since);
-- With several hubs: every batch as it came (the unit hubs copy to each other), the seq below
-- which retention deleted a node's batches, and the singleton jobs' runs the cluster agreed on
CREATE TABLE IF NOT EXISTS batches (
    node TEXT NOT NULL, seq INTEGER NOT NULL, received REAL NOT NULL, readings TEXT NOT NULL,
    alerts TEXT NOT NULL, PRIMARY KEY (node, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batches_received ON batches (received);
CREATE TABLE IF NOT EXISTS batch_floor (node TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS job_runs (
    job TEXT NOT NULL, key TEXT NOT NULL, hub TEXT NOT NULL, ran REAL NOT NULL, result TEXT NOT NULL,
    PRIMARY KEY (job, key)
);
-- Each export target's progress: the last samples.id the engine accepted, how many it took, and
-- how many readings retention deleted before they were sent
CREATE TABLE IF NOT EXISTS export_state (
    name TEXT PRIMARY KEY, cursor INTEGER NOT NULL, sent INTEGER NOT NULL, lost INTEGER NOT NULL,
    updated REAL NOT NULL
);
-- Notifications: each channel's first start (only alert changes after it are sent), the durable
-- queue of messages owed, and what was sent (or suppressed, digested, failed) under which key
CREATE TABLE IF NOT EXISTS notify_channels (
    name TEXT PRIMARY KEY, started REAL NOT NULL, suppressed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS notify_queue (
    channel TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL, due REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, held INTEGER NOT NULL DEFAULT 0, queued REAL NOT NULL,
    PRIMARY KEY (channel, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notify_sent (
    channel TEXT NOT NULL, key TEXT NOT NULL, sent REAL NOT NULL, receipt TEXT NOT NULL, counted INTEGER NOT NULL,
    PRIMARY KEY (channel, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alerts_updated ON alerts (updated);
CREATE TABLE IF NOT EXISTS daily_summaries (
    day TEXT NOT NULL, node TEXT NOT NULL, sensor TEXT NOT NULL, quantity TEXT NOT NULL, unit TEXT NOT NULL,
    min REAL NOT NULL, mean REAL NOT NULL, max REAL NOT NULL, n INTEGER NOT NULL, alerts INTEGER NOT NULL,
    PRIMARY KEY (day, node, sensor, quantity)
);
""".replace("@INGEST_LOG@", INGEST_LOG)
INSERT_LOG = "INSERT INTO ingest_log (received, batches) VALUES (?,?)"
SEEN_WRITE_S = 30.0  # how stale a node's last_seen on disk may get while it pushes
# How long a reader waits for the indexer to move what was logged before it answers with what
# was moved (a hub restarted behind a long outage moves about 40,000 batches a second here).
SETTLE_TIMEOUT_S = 30.0
_SERIES_OF = itemgetter(0, 1, 3)  # a Row's (sensor, quantity, unit)
log = logging.getLogger(__name__)


class Row(NamedTuple):
    """One reading as the hub handles it; Reading(node, *row) rebuilds the reading."""

    sensor: str
    quantity: str
    value: float | None
    unit: str
    ts: float
    quality: str
    reason: str | None


class Batch(NamedTuple):
    """One checked pushed batch: its node, seq, readings and alert events."""

    node: str
    seq: int
    rows: list[Row]
    alerts: list[dict[str, Any]]


class _Commit:
    """One push waiting for the group commit that takes it."""

    __slots__ = ("batches", "received", "seen", "series", "done", "new", "error")

    def __init__(self, batches: list[Batch], received: float, seen: dict[str, float],
                 series: set[tuple[str, str, str]] | None = None) -> None:
        self.batches, self.received, self.seen, self.series = batches, received, seen, series
        self.done = False
        self.new: list[tuple[str, int]] = []
        self.error: BaseException | None = None

    def finish(self, new: list[tuple[str, int]] | None = None, error: BaseException | None = None) -> None:
        self.new, self.error, self.done = new or [], error, True

    def result(self) -> list[tuple[str, int]]:
        if self.error is not None:
            raise self.error
        return self.new


class StoreSchemaError(RuntimeError):
    """The database file was written by an incompatible version."""


class Store(StoreHousekeeping, NotifyLog):
    """Thread-safe access to the hub database (one connection, serialized by a lock)."""

    def __init__(self, path: Path | str, max_mb: float = 0, keep_batches: bool = False) -> None:
        self.path = Path(path)
        # With several hubs every batch is kept as it came, and a batch is new when its
        # (node, seq) is not held: a hub that was down receives later batches first and the
        # ones it missed afterwards, from a peer. One hub keeps only each node's last seq.
        self.keep_batches = keep_batches
        self._held: dict[str, SeqSet] = {}
        self._floor: dict[str, int] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._last_logged = 0  # the newest ingest_log id committed
        self._seen_written: dict[str, float] = {}  # node -> the last_seen this store last wrote for it
        self._group = threading.Condition()  # guards the two below: pushes waiting to commit together
        self._queue: list[_Commit] = []
        self._committing = False
        self._closed = False
        self.max_pages = 0
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # The hub acknowledges a batch only after this commit; FULL makes the ack mean
        # "survives power loss", which is what lets a spoke delete its copy.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version not in (0, MIGRATES_FROM, SCHEMA_VERSION) or (version == 0 and tables):
            self._db.close()
            raise StoreSchemaError(f"{self.path} has store schema {version}, this hub needs {SCHEMA_VERSION}; "
                                   "move the file away to start a new store")
        self._db.execute("ATTACH ? AS data", (str(data_path(self.path)),))
        self._db.execute("PRAGMA data.journal_mode=WAL")
        self._db.execute("PRAGMA data.synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._db.executescript(DATA_SCHEMA)
        if version == MIGRATES_FROM:
            self._migrate()
        for (table, column), decl in ADDED_COLUMNS.items():
            if column not in {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if max_mb:
            # a size cap behaves exactly like a full disk (SQLITE_FULL), by the operator's choice
            (page,) = self._db.execute("PRAGMA page_size").fetchone()
            self.max_pages = max(16, int(max_mb * 1024 * 1024 / page))
            self._cap()
        self._series: dict[tuple[str, str, str], int] = {
            (n, s, q): i for i, n, s, q in self._db.execute("SELECT id, node, sensor, quantity FROM series")}
        # node_seq as committed (this connection is its only writer): a push reads a node's last
        # seq here, not with a SELECT in its transaction
        self._seqs: dict[str, int] = dict(self._db.execute("SELECT node, last_seq FROM node_seq"))
        (self._last_logged,) = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM ingest_log").fetchone()
        if not self._last_logged:  # a clean stop emptied the log: its ids start again at 1
            self._db.execute("UPDATE data.moved SET log_id = 0")
        (moved,) = self._db.execute("SELECT log_id FROM data.moved").fetchone()
        self._prune_to = self._pruned = 0  # log ids: moved durably, and deleted
        self._indexer = IndexerProcess(self.path, moved, self._durable, self.max_pages)
        if self._last_logged > moved:  # a crash left batches logged: move them now
            self._indexer.wake(upto=self._last_logged)
        if keep_batches:
            self._floor = dict(self._db.execute("SELECT node, seq FROM batch_floor"))
            # runs of consecutive seqs per node ("gaps and islands"), one scan in SQLite
            for node, lo, hi in self._db.execute(
                    "SELECT node, MIN(seq), MAX(seq) FROM (SELECT node, seq, seq - ROW_NUMBER() OVER "
                    "(PARTITION BY node ORDER BY seq) AS run FROM batches) GROUP BY node, run ORDER BY node, 1"):
                self._held.setdefault(node, SeqSet()).add_range(lo, hi)
            for node, floor in self._floor.items():  # as retention left them, restart or not
                if node in self._held:
                    self._held[node].remove_below(floor)

    def _series_id(self, node: str, sensor: str, quantity: str, unit: str) -> int:
        key = (node, sensor, quantity)
        sid = self._series.get(key)
        if sid is None:
            self._db.execute("INSERT OR IGNORE INTO series (node, sensor, quantity, unit) VALUES (?,?,?,?)",
                             (node, sensor, quantity, unit))
            (sid,) = self._db.execute("SELECT id FROM series WHERE node=? AND sensor=? AND quantity=?",
                                      key).fetchone()
            self._series[key] = sid
        return sid

    def _rows(self, node: str, rows: list[Row], seq: int, received: float) -> list[tuple[Any, ...]]:
        sid = self._series_id
        return [(sid(node, r.sensor, r.quantity, r.unit), r.ts, r.value, r.quality, r.reason, seq, received)
                for r in rows]

    def _ensure_series(self, logged: list[tuple[str, int, list[Row]]],
                       series: set[tuple[str, str, str]] | None = None) -> None:
        """Every series of the logged batches has its row first (the indexer looks them up).

        The log row holds the checked rows as they are, packed in one call; resolving each
        reading's series id here cost a Python step per reading on the push's path. `series`:
        what the batches (one node's) hold, gathered by the push's checks (see commit_batches)."""
        per_node: dict[str, set[tuple[str, str, str]]] = {}
        if series is not None:
            per_node[logged[0][0]] = series
        else:
            for node, _, rows in logged:
                keys = per_node.get(node)
                if keys is None:
                    keys = per_node[node] = set()
                keys.update(map(_SERIES_OF, rows))
        known = self._series
        for node, keys in per_node.items():
            for sensor, quantity, unit in keys:
                if (node, sensor, quantity) not in known:
                    self._series_id(node, sensor, quantity, unit)

    @contextmanager
    def _transaction(self, samples: bool = False, seqs: dict[str, int] | None = None) -> Iterator[sqlite3.Connection]:
        """Every write: under the lock, BEGIN ... COMMIT, or roll back and re-raise (see _write).

        `seqs`: the last seqs the transaction writes (see _commit), made the committed ones once it
        commits, before the lock goes to any other write."""
        with self._lock:
            with self._write(samples) as db:
                yield db
            if seqs:
                self._seqs.update(seqs)

    @contextmanager
    def _write(self, samples: bool = False) -> Iterator[sqlite3.Connection]:
        """BEGIN ... COMMIT (the caller holds the lock), or roll back and re-raise.

        This connection is the only writer of the store's file, so a deferred BEGIN never meets
        another writer there. A transaction that writes samples (`samples=True`) shares that
        file with the indexer, and begins IMMEDIATE to wait for the indexer's lock up front: a
        deferred one that read samples first would fail outright if the indexer committed
        meanwhile. IMMEDIATE takes the write lock of every attached file, so the pushes'
        transactions must not: each would wait for the indexer's current move.

        SQLITE_FULL (a full disk, or the store.max_mb cap) becomes StoreFull, so every
        caller (a push, the hub's own readings, housekeeping) refuses the same clear way."""
        try:
            self._db.execute("BEGIN IMMEDIATE" if samples else "BEGIN")
            yield self._db
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:  # "database or disk is full" and friends
            self._rollback()
            if "full" in str(exc).lower():
                raise StoreFull(f"hub store {self.path} is full ({exc}): pushes are refused and the spokes "
                                "keep their batches in their outboxes until it has room; free disk space, "
                                "or raise store.max_mb if it caps the store") from None
            raise
        except BaseException:
            self._rollback()
            raise

    def _migrate(self) -> None:
        """A version-2 store: its samples move to the file beside it, and batches still in its
        ingest log (one row per batch, series resolved) into samples, before the log takes
        this version's rows (one per push, series by name).

        Copying is idempotent (ids are kept), so a migration cut short runs again at the next start."""
        (n,) = self._db.execute("SELECT COUNT(*) FROM main.samples").fetchone()
        log.warning("moving %d stored readings from %s into %s (once, for this release's store layout)",
                    n, self.path, data_path(self.path))
        with self._lock, self._write(samples=True) as db:
            db.execute("INSERT OR IGNORE INTO data.samples SELECT id, series, ts, value, quality, reason, seq, "
                       "received FROM main.samples")
            db.executemany(INSERT_SAMPLE.replace("INTO samples", "INTO data.samples"),  # main's is still there
                           [(sid, ts, value, quality, reason, seq, received)
                            for seq, received, packed in db.execute("SELECT seq, received, rows FROM ingest_log")
                            for sid, ts, value, quality, reason in msgpack.unpackb(packed)])
            db.execute("DROP TABLE ingest_log")
            db.execute(INGEST_LOG)
            db.execute("UPDATE data.moved SET log_id = 0")
            db.execute("DROP VIEW IF EXISTS main.readings")
            db.execute("DROP TABLE main.samples")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        log.warning("moved %d readings into %s", n, data_path(self.path))

    # -- the ingest log and its indexer ---------------------------------------------------
    def flush(self, timeout: float = SETTLE_TIMEOUT_S) -> bool:
        """Wait until every logged batch is in samples: True, or False when the indexer reported a
        failure (a full disk) or the timeout passed first. Readers call it first."""
        target = self._last_logged
        if self._indexer.moved >= target:
            return True
        self._indexer.wake(now=True, upto=target)
        return self._indexer.wait(target, timeout)

    def settle(self) -> None:
        """Readers' first step: what was acknowledged is in samples (a full disk leaves it logged:
        the reader sees what was moved, and the indexer retries)."""
        if not self.flush():
            log.warning("hub store %s: answering with the readings moved so far (%s)", self.path,
                        self._indexer.error or "the indexer is behind")

    def unmoved(self) -> int:
        """Acknowledged pushes whose readings the indexer has not moved into samples yet (log rows)."""
        return max(0, self._last_logged - self._indexer.moved)

    def indexer_errors(self) -> int:
        """Moves that failed (a full disk) and indexer processes that died, since the store opened."""
        return self._indexer.errors

    def _logged_up_to(self, last: int) -> None:
        """Log rows up to id `last` were committed: wake the indexer."""
        if last > self._last_logged:
            self._last_logged = last
            self._indexer.wake(upto=last)

    def _cap(self) -> None:
        """(under the lock, or while opening) The size cap holds for the two files together: each
        may grow by what the other leaves of it (re-read by each push and each move)."""
        if self.max_pages:
            (main,) = self._db.execute("PRAGMA main.page_count").fetchone()
            (data,) = self._db.execute("PRAGMA data.page_count").fetchone()
            self._db.execute(f"PRAGMA main.max_page_count = {max(16, self.max_pages - data)}")
            self._db.execute(f"PRAGMA data.max_page_count = {max(16, self.max_pages - main)}")

    def _durable(self, durable: int) -> None:
        """The indexer moved the log durably up to `durable`: those rows may go. The next push
        deletes them in its own transaction; an idle store deletes them now, unless it is busy."""
        self._prune_to = durable
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._closed:
                return
            self._cap()
            if self._pruned >= durable:
                return
            with self._write() as db:
                pruned = self._prune(db)
            self._pruned = pruned
        except (sqlite3.Error, StoreFull) as exc:  # a full disk: the rows wait for the next prune
            log.warning("pruning the ingest log failed: %s", exc)
        finally:
            self._lock.release()

    def _prune(self, db: sqlite3.Connection) -> int:
        """(in a transaction) Delete log rows moved durably, but never the newest: its id must
        not be reused. Returns how far the log is pruned once this commits."""
        upto = self._prune_to
        db.execute("DELETE FROM ingest_log WHERE id <= ? AND id < (SELECT MAX(id) FROM ingest_log)", (upto,))
        return upto

    # -- writes ---------------------------------------------------------------------------
    def commit_batches(self, batches: list[Batch], received: float, seen: dict[str, float],
                       series: set[tuple[str, str, str]] | None = None) -> list[tuple[str, int]]:
        """Insert new batches and advance each node's seq in one transaction.

        Returns the (node, seq) pairs that were new. A batch already held is skipped: that is
        the idempotence of push. A node without a registry row gets one in the same
        transaction, so its batches and its row are stored together or not at all.

        Pushes that arrive while another commits wait and go together in the next transaction
        (group commit): one fsync for all of them instead of one each. With a thousand spokes,
        fsyncs under the store lock otherwise held it for half of every second and queued the
        pushes behind each other. Each still returns only after its own batches are durable.

        `series`: the (sensor, quantity, unit) of every reading, when the batches are one node's
        and the caller gathered them (actors.hub.ingest.check_push); the rows are read otherwise."""
        mine = _Commit(batches, received, seen, series)
        with self._group:
            self._queue.append(mine)
            while self._committing and not mine.done:
                self._group.wait()
            if mine.done:
                return mine.result()
            self._committing = True
            group, self._queue = self._queue, []
        try:
            self._commit_group(group)
        finally:
            for one in group:  # the leader interrupted mid-way: whoever waits must not wait forever
                if not one.done:
                    one.finish(error=StoreFull(f"hub store {self.path}: the commit was interrupted; push again"))
            with self._group:
                self._committing = False
                self._group.notify_all()
        return mine.result()

    def _commit_group(self, group: list[_Commit]) -> None:
        """One transaction for the group; if it fails and holds more than one push, each alone
        (so that one push's failure is its own)."""
        try:
            new = self._write_group(group)
        except Exception as exc:
            if len(group) == 1:
                group[0].finish(error=exc)
                return
            for one in group:
                try:
                    one.finish(new=self._write_group([one])[0])
                except Exception as own:  # noqa: BLE001 (handed to the push it belongs to)
                    one.finish(error=own)
            return
        for one, its_new in zip(group, new, strict=True):
            one.finish(new=its_new)

    def _write_group(self, group: list[_Commit]) -> list[list[tuple[str, int]]]:
        """A node's last_seen on disk only warms the view after a restart: it is written with the
        node's first batch and then at most every SEEN_WRITE_S, not with every push."""
        seen: dict[str, float] = {}
        for one in group:
            seen.update(one.seen)
        seqs: dict[str, int] = {}
        with self._transaction(seqs=seqs) as db:
            self._cap()
            unknown = [(n, ts) for n, ts in seen.items() if n not in self._seen_written]
            stale = [(ts, n) for n, ts in seen.items()
                     if n in self._seen_written and ts - self._seen_written[n] >= SEEN_WRITE_S]
            if unknown:
                db.executemany("INSERT OR IGNORE INTO nodes VALUES (?, 'spoke', 'wasm', 5.0, ?, NULL, '{}')", unknown)
                stale += [(ts, n) for n, ts in unknown]
            done = [self._commit(db, one.batches, one.received, seqs, one.series) for one in group]
            if stale:
                db.executemany("UPDATE nodes SET last_seen = ? WHERE name = ?", stale)
            pruned = self._prune(db) if self._prune_to > self._pruned else self._pruned
        new = [n for n, _ in done]
        tail = max(t for _, t in done)
        self._pruned = pruned
        for ts, n in stale:  # after the commit: a rolled-back write is written again next time
            self._seen_written[n] = ts
        self._logged_up_to(tail)
        self._hold([pair for n in new for pair in n])
        return new

    def commit_own(self, node: str, rows: list[Row], alerts: list[dict[str, Any]], received: float) -> int:
        """The hub's own readings and alert events as its next batch (with several hubs, so that
        they reach its peers as every node's do); returns the batch's seq."""
        seqs: dict[str, int] = {}
        with self._transaction(seqs=seqs) as db:
            held = self._held.get(node)
            seq = max(self._seqs.get(node, 0), held.maximum() if held else 0) + 1
            new, tail = self._commit(db, [Batch(node, seq, rows, alerts)], received, seqs)
        self._logged_up_to(tail)
        self._hold(new)
        return seq

    def _commit(self, db: sqlite3.Connection, batches: list[Batch], received: float,
                seqs: dict[str, int], series: set[tuple[str, str, str]] | None = None,
                ) -> tuple[list[tuple[str, int]], int]:
        """(in a transaction) Log the new batches as one row; returns them as (node, seq) pairs and
        the row's id (0 without a new batch). `seqs` holds the last seqs the transaction wrote so
        far (the committed ones are self._seqs): this adds the ones it writes."""
        before = {n: seqs.get(n, self._seqs.get(n, 0)) for n in {b.node for b in batches}}
        last = dict(before)
        logged: list[tuple[Any, ...]] = []
        new: list[tuple[str, int]] = []
        alerts: list[tuple[int, dict[str, Any]]] = []
        for b in sorted(batches, key=lambda x: (x.node, x.seq)):
            if self.keep_batches:
                if b.seq <= self._floor.get(b.node, 0) or db.execute(
                        "INSERT OR IGNORE INTO batches VALUES (?,?,?,?,?)",
                        (b.node, b.seq, received, json.dumps(b.rows), json.dumps(b.alerts))).rowcount == 0:
                    continue
                last[b.node] = max(last.get(b.node, 0), b.seq)
            else:
                if b.seq <= last.get(b.node, 0):
                    continue
                last[b.node] = b.seq
            new.append((b.node, b.seq))
            logged.append((b.node, b.seq, b.rows))
            if b.alerts:
                alerts.extend((b.seq, e) for e in b.alerts)
        row = 0
        if logged:
            self._ensure_series(logged, series)
            row = db.execute(INSERT_LOG, (received, pack_logged(logged))).lastrowid or 0
        changed = [(n, seq) for n, seq in last.items() if seq != before[n]]
        if changed:
            db.executemany(
                "INSERT INTO node_seq VALUES (?, ?) ON CONFLICT(node) DO UPDATE SET last_seq = excluded.last_seq",
                changed)
            seqs.update(changed)
        for seq, event in alerts:
            self._apply_alert(event, received, seq)
        return new, row

    def _hold(self, new: list[tuple[str, int]]) -> None:
        """Add committed batches to the holdings (after the commit: the table is the truth,
        the holdings what peers are told)."""
        if not self.keep_batches or not new:
            return
        with self._lock:
            for node, seq in new:
                self._held.setdefault(node, SeqSet()).add(seq)

    def holdings(self) -> dict[str, list[Interval]]:
        """Per node, the intervals of seqs held (batches retention deleted are not among them)."""
        with self._lock:
            return {n: h.intervals() for n, h in self._held.items() if h}

    def floors(self) -> dict[str, int]:
        """Per node, the seq at and below which retention deleted its batches."""
        with self._lock:
            return dict(self._floor)

    def missing(self, node: str, intervals: list[Interval]) -> list[Interval]:
        """Which of `intervals` of a node's seqs this store lacks (above the node's floor)."""
        with self._lock:
            held = self._held.get(node) or SeqSet()
            return held.missing_from(intervals, self._floor.get(node, 0))

    def fetch_batches(self, node: str, intervals: list[Interval], limit: int) -> list[tuple[int, str, str]]:
        """Up to `limit` held batches of a node in the intervals, in order, as (seq, rows JSON, alerts JSON)."""
        out: list[tuple[int, str, str]] = []
        with self._lock:
            for lo, hi in intervals:
                if len(out) >= limit:
                    break
                out.extend(self._db.execute("SELECT seq, readings, alerts FROM batches WHERE node=? AND seq>=? "
                                            "AND seq<=? ORDER BY seq LIMIT ?", (node, lo, hi, limit - len(out))))
        return out

    def oldest_received(self, node: str, intervals: list[Interval]) -> float | None:
        """The earliest receipt time of the held batches of a node in the intervals."""
        oldest = None
        with self._lock:
            for lo, hi in intervals:
                (t,) = self._db.execute("SELECT MIN(received) FROM batches WHERE node=? AND seq>=? AND seq<=?",
                                        (node, lo, hi)).fetchone()
                if t is not None and (oldest is None or t < oldest):
                    oldest = t
        return oldest

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        # a rolled-back transaction may have created series rows the cache now names
        self._series = {(n, s, q): i for i, n, s, q in self._db.execute("SELECT id, node, sensor, quantity FROM series")}

    def _apply_alert(self, e: dict[str, Any], received: float, seq: int | None = None) -> None:
        """Append an event to the history and update its episode's row (in a transaction).

        An episode is one raise of an alert, named by its key and `since` (every event of the
        episode carries it). Events may arrive in any order (a hub that was down fetches them
        from a peer later), so the rule is order-free: an episode is active until a clear of it
        arrives, or until a newer episode of the same alert exists (its node raised it again,
        so the old one ended)."""
        self._db.execute(
            "INSERT INTO alert_events (raised_by, plugin, alert, state, severity, message, node, sensor, quantity, "
            "value, ts, since, received, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (e["raised_by"], e["plugin"], e["alert"], e["state"], e["severity"], e["message"], e["node"],
             e["sensor"], e["quantity"], e["value"], e["ts"], e["since"], received, seq))
        key = (e["raised_by"], e["plugin"], e["alert"])
        row = self._db.execute("SELECT id FROM alerts WHERE raised_by=? AND plugin=? AND alert=? AND since=?",
                               (*key, e["since"])).fetchone()
        if row is None:
            (newer,) = self._db.execute("SELECT COUNT(*) FROM alerts WHERE raised_by=? AND plugin=? AND alert=? "
                                        "AND since>?", (*key, e["since"])).fetchone()
            active = 0 if e["state"] == "cleared" or newer else 1
            cur = self._db.execute(
                "INSERT INTO alerts (raised_by, plugin, alert, severity, message, node, sensor, quantity, value, "
                "since, updated, active) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (*key, e["severity"], e["message"], e["node"], e["sensor"], e["quantity"], e["value"], e["since"],
                 e["ts"], active))
            row = (cur.lastrowid,)
            # older episodes still open ended when this one began
            self._db.execute("UPDATE alerts SET active=0, updated=? WHERE raised_by=? AND plugin=? AND alert=? "
                             "AND since<? AND active=1", (e["since"], *key, e["since"]))
        if e["state"] == "cleared":
            self._db.execute("UPDATE alerts SET active=0, updated=?, message=?, value=? WHERE id=?",
                             (e["ts"], e["message"], e["value"], row[0]))
        elif e["state"] == "acknowledged":
            self._db.execute("UPDATE alerts SET acknowledged=1, acked_ts=COALESCE(acked_ts, ?), "
                             "acked_by=COALESCE(acked_by, ?) WHERE id=?", (e["ts"], e["raised_by"], row[0]))

    def record_alerts(self, events: list[dict[str, Any]], received: float) -> None:
        """Alert events that did not come in a batch (the hub's own plugins)."""
        with self._transaction():
            for event in events:
                self._apply_alert(event, received)

    def alerts(self, active_only: bool = True, limit: int = 200) -> list[dict[str, Any]]:
        """Current alerts (active ones, or the most recent including cleared)."""
        return self._alert_rows("WHERE active = 1" if active_only else "", (), limit)

    def _alert_rows(self, where: str, args: tuple[Any, ...], limit: int) -> list[dict[str, Any]]:
        cols = ("id", "raised_by", "plugin", "alert", "severity", "message", "node", "sensor", "quantity", "value",
                "since", "updated", "active", "acknowledged", "acked_by", "acked_ts")
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(cols)} FROM alerts {where} ORDER BY since DESC LIMIT ?",
                                    (*args, limit)).fetchall()
        return [{**dict(zip(cols, r, strict=True)), "active": bool(r[12]), "acknowledged": bool(r[13])} for r in rows]

    def alert_history(self, since: float, limit: int = 500) -> list[dict[str, Any]]:
        """Alert events received since a time, newest first."""
        cols = ("id", "raised_by", "plugin", "alert", "state", "severity", "message", "node", "sensor", "quantity",
                "value", "ts", "since")
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(cols)} FROM alert_events WHERE ts >= ? ORDER BY ts DESC "
                                    "LIMIT ?", (since, limit)).fetchall()
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def acknowledge(self, alert_id: int, by: str, ts: float) -> dict[str, Any] | None:
        """Mark an active alert acknowledged at the hub; returns it, or None if no such active alert."""
        with self._transaction() as db:
            cur = db.execute("UPDATE alerts SET acknowledged=1, acked_by=?, acked_ts=? WHERE id=? AND active=1",
                             (by, ts, alert_id))
        if cur.rowcount == 0:
            return None
        return self.alert(alert_id)

    def alert(self, alert_id: int) -> dict[str, Any] | None:
        """One alert row by its id on this hub."""
        return next((a for a in self._alert_rows("WHERE id = ?", (alert_id,), 1)), None)

    def acknowledge_episode(self, key: list[Any], by: str, ts: float) -> None:
        """Mark the alert episode (raised_by, plugin, alert, since) acknowledged, if this hub
        holds it yet (a hub that gets its raise later applies the acknowledgement then)."""
        with self._transaction() as db:
            db.execute("UPDATE alerts SET acknowledged=1, acked_by=COALESCE(acked_by, ?), "
                       "acked_ts=COALESCE(acked_ts, ?) WHERE raised_by=? AND plugin=? AND alert=? AND since=? "
                       "AND acknowledged=0", (by, ts, *key))

    def episode_acks(self, keys: list[list[Any]]) -> dict[tuple[Any, ...], bool]:
        """For each of these episodes this hub holds: whether it is marked acknowledged."""
        out = {}
        with self._lock:
            for key in keys:
                row = self._db.execute("SELECT MAX(acknowledged) FROM alerts WHERE raised_by=? AND plugin=? "
                                       "AND alert=? AND since=?", key).fetchone()
                if row[0] is not None:
                    out[tuple(key)] = bool(row[0])
        return out

    def unacknowledged(self, keys: list[list[Any]]) -> list[list[Any]]:
        """Which of these episodes this hub holds and has not marked acknowledged."""
        held = self.episode_acks(keys)
        return [k for k in keys if held.get(tuple(k)) is False]

    def record_job_run(self, job: str, key: str, hub: str, ran: float, result: str) -> None:
        """A singleton job's run the cluster agreed on."""
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO job_runs VALUES (?,?,?,?,?)", (job, key, hub, ran, result))

    def job_run(self, job: str, key: str) -> dict[str, Any] | None:
        """The recorded run of a singleton job for one slot, if any."""
        with self._lock:
            row = self._db.execute("SELECT hub, ran, result FROM job_runs WHERE job=? AND key=?", (job, key)).fetchone()
        return None if row is None else {"hub": row[0], "ran": row[1], "result": row[2]}

    def export_state(self, name: str) -> dict[str, int]:
        """An export target's cursor, readings sent and readings lost to retention (zeros when new)."""
        with self._lock:
            row = self._db.execute("SELECT cursor, sent, lost FROM export_state WHERE name = ?", (name,)).fetchone()
        return dict(zip(("cursor", "sent", "lost"), row or (0, 0, 0), strict=True))

    def save_export(self, name: str, cursor: int, sent: int) -> None:
        """Move an export target's cursor (after the engine took the readings up to it)."""
        with self._transaction() as db:
            db.execute("INSERT INTO export_state VALUES (?, ?, ?, 0, ?) ON CONFLICT(name) DO UPDATE SET "
                       "cursor = excluded.cursor, sent = sent + excluded.sent, updated = excluded.updated",
                       (name, cursor, sent, time.time()))

    def insert_local(self, node: str, rows: list[Row], received: float) -> None:
        """The hub's own readings (seq 0: they never travel)."""
        with self._transaction(samples=True) as db:
            db.executemany(INSERT_SAMPLE, self._rows(node, rows, 0, received))

    def upsert_node(self, name: str, role: str, profile: str, push_interval: float, last_seen: float | None,
                    clock_offset: float | None, info: dict[str, Any]) -> None:
        """Create or update a node registry row."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO nodes VALUES (?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET role=excluded.role, "
                "profile=excluded.profile, push_interval=excluded.push_interval, last_seen=excluded.last_seen, "
                "clock_offset=excluded.clock_offset, info=excluded.info",
                (name, role, profile, push_interval, last_seen, clock_offset, json.dumps(info)))

    # -- reads ----------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        """Every registered node with its last seq."""
        with self._lock:
            rows = self._db.execute(
                "SELECT n.name, n.role, n.profile, n.push_interval, n.last_seen, n.clock_offset, n.info, "
                "COALESCE(s.last_seq, 0) FROM nodes n LEFT JOIN node_seq s ON s.node = n.name").fetchall()
        return [{"name": r[0], "role": r[1], "profile": r[2], "push_interval": r[3], "last_seen": r[4],
                 "clock_offset": r[5], "info": json.loads(r[6]), "last_seq": r[7]} for r in rows]

    def latest(self) -> list[tuple[str, Row]]:
        """(node, row) of the newest reading of every series (to warm the in-memory view)."""
        self.settle()
        with self._lock:
            rows = self._db.execute(
                "SELECT s.node, s.sensor, s.quantity, x.value, s.unit, x.ts, x.quality, x.reason FROM series s "
                "JOIN samples x ON x.id = (SELECT id FROM samples WHERE series = s.id ORDER BY ts DESC LIMIT 1)"
            ).fetchall()
        return [(r[0], Row._make(r[1:])) for r in rows]

    def count(self, node: str | None = None) -> int:
        """Raw readings stored (for one node or all), in samples or still in the log (a full disk
        can keep acknowledged batches there until it has room)."""
        self.settle()
        with self._lock:
            # one read transaction: the log as of its first read, then samples and the indexer's mark
            # as of theirs (a later moment): a log row at or below that mark is counted in samples
            self._db.execute("BEGIN")
            try:
                logged = self._db.execute("SELECT id, batches FROM ingest_log").fetchall()
                (moved,) = self._db.execute("SELECT log_id FROM data.moved").fetchone()
                if node is None:
                    (n,) = self._db.execute("SELECT COUNT(*) FROM samples").fetchone()
                else:
                    (n,) = self._db.execute("SELECT COUNT(*) FROM samples x JOIN series s ON s.id = x.series "
                                            "WHERE s.node = ?", (node,)).fetchone()
            finally:
                self._db.execute("COMMIT")
            return n + sum(len(rows) for i, packed in logged if i > moved
                           for who, _, rows in unpack_logged(packed) if node in (None, who))

    def history(self, node: str, sensor: str, quantity: str, since: float, until: float,
                step: str, limit: int = 10_000) -> list[list[float]]:
        """Points of one series: [ts, value] for raw, [bucket, min, mean, max] for rollups."""
        self.settle()
        with self._lock:
            sid = self._series.get((node, sensor, quantity))
            if sid is None:
                return []
            if step == "raw":
                cur = self._db.execute(
                    "SELECT ts, value FROM samples WHERE series=? AND ts>=? AND ts<? AND value IS NOT NULL "
                    "ORDER BY ts LIMIT ?", (sid, since, until, limit))
            else:
                cur = self._db.execute(
                    "SELECT bucket, min, mean, max FROM rollups WHERE step=? AND series=? AND bucket>=? AND bucket<? "
                    "ORDER BY bucket LIMIT ?", (STEPS[step], sid, since - STEPS[step], until, limit))
            return [list(r) for r in cur]

    def series_exists(self, node: str, sensor: str | None = None, quantity: str | None = None) -> bool:
        """True when the store holds a series for node (and sensor, and quantity)."""
        with self._lock:
            return any(n == node and sensor in (None, s) and quantity in (None, q) for n, s, q in self._series)

    def close(self) -> None:
        """Move what is logged into samples and stop the indexer (a clean stop leaves no log), close."""
        self.settle()
        self._indexer.close()  # after its last commit, which syncs
        with self._lock:
            self._closed = True
            try:
                with self._write(samples=True) as db:
                    (moved,) = db.execute("SELECT log_id FROM data.moved").fetchone()
                    db.execute("DELETE FROM ingest_log WHERE id <= ?", (moved,))
                    # empty: the next start numbers the log from 1
                    if db.execute("SELECT 1 FROM ingest_log LIMIT 1").fetchone() is None:
                        db.execute("UPDATE data.moved SET log_id = 0")
            except sqlite3.Error as exc:  # closing anyway: the next start moves what is left
                log.warning("closing the store with batches still logged: %s", exc)
            self._db.close()
