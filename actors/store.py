"""The hub's SQLite store: raw readings, per-node sequence state, the node registry,
1-minute and 1-hour rollups, alert events. One writer connection, WAL, one commit per push."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from actors.errors import StoreFull
from hal.readings import Reading

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so rollups can track what is new
    node TEXT NOT NULL, sensor TEXT NOT NULL, quantity TEXT NOT NULL,
    ts REAL NOT NULL, value REAL, unit TEXT NOT NULL, quality TEXT NOT NULL, reason TEXT,
    seq INTEGER NOT NULL, received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_series ON readings (node, sensor, quantity, ts);
CREATE TABLE IF NOT EXISTS node_seq (node TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, profile TEXT NOT NULL, push_interval REAL NOT NULL,
    last_seen REAL, clock_offset REAL, info TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS rollups (
    step INTEGER NOT NULL, node TEXT NOT NULL, sensor TEXT NOT NULL, quantity TEXT NOT NULL,
    bucket REAL NOT NULL, min REAL NOT NULL, mean REAL NOT NULL, max REAL NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (step, node, sensor, quantity, bucket)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""
STEPS = {"1m": 60, "1h": 3600}
INSERT_READING = ("INSERT INTO readings (node, sensor, quantity, ts, value, unit, quality, reason, seq, received) "
                  "VALUES (?,?,?,?,?,?,?,?,?,?)")


class Store:
    """Thread-safe access to the hub database (one connection, serialized by a lock)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # The hub acknowledges a batch only after this commit; FULL makes the ack mean
        # "survives power loss", which is what lets a spoke delete its copy.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    # -- writes ---------------------------------------------------------------------------
    def commit_batches(self, batches: list[tuple[str, int, list[Reading]]], received: float,
                       seen: dict[str, float]) -> list[tuple[str, int]]:
        """Insert new batches and advance each node's seq in one transaction.

        Returns the (node, seq) pairs that were new. Batches at or below a node's stored
        seq are skipped: that is the idempotence of push."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                last = self._last_seqs({n for n, _, _ in batches})
                rows = []
                new: list[tuple[str, int]] = []
                for node, seq, readings in sorted(batches, key=lambda b: (b[0], b[1])):
                    if seq <= last.get(node, 0):
                        continue
                    last[node] = seq
                    new.append((node, seq))
                    rows.extend((r.node, r.sensor, r.quantity, r.ts, r.value, r.unit, r.quality, r.reason,
                                 seq, received) for r in readings)
                self._db.executemany(INSERT_READING, rows)
                self._db.executemany(
                    "INSERT INTO node_seq VALUES (?, ?) ON CONFLICT(node) DO UPDATE SET last_seq = excluded.last_seq",
                    list(last.items()))
                self._db.executemany("UPDATE nodes SET last_seen = ? WHERE name = ?",
                                     [(ts, n) for n, ts in seen.items()])
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:  # "database or disk is full" and friends
                self._rollback()
                if "full" in str(exc).lower():
                    raise StoreFull(f"hub store {self.path} is full ({exc}); push refused, keep the outbox") from None
                raise
            except BaseException:
                self._rollback()
                raise
            return new

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def insert_local(self, readings: list[Reading], received: float) -> None:
        """The hub's own readings (seq 0: they never travel)."""
        with self._lock:
            self._db.executemany(INSERT_READING,
                                 [(r.node, r.sensor, r.quantity, r.ts, r.value, r.unit, r.quality, r.reason,
                                   0, received) for r in readings])

    def upsert_node(self, name: str, role: str, profile: str, push_interval: float, last_seen: float | None,
                    clock_offset: float | None, info: dict[str, Any]) -> None:
        """Create or update a node registry row."""
        with self._lock:
            self._db.execute(
                "INSERT INTO nodes VALUES (?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET role=excluded.role, "
                "profile=excluded.profile, push_interval=excluded.push_interval, last_seen=excluded.last_seen, "
                "clock_offset=excluded.clock_offset, info=excluded.info",
                (name, role, profile, push_interval, last_seen, clock_offset, json.dumps(info)))

    # -- reads ----------------------------------------------------------------------------
    def _last_seqs(self, nodes: Iterable[str]) -> dict[str, int]:
        nodes = list(nodes)
        if not nodes:
            return {}
        marks = ",".join("?" * len(nodes))
        return dict(self._db.execute(f"SELECT node, last_seq FROM node_seq WHERE node IN ({marks})", nodes))

    def nodes(self) -> list[dict[str, Any]]:
        """Every registered node with its last seq."""
        with self._lock:
            rows = self._db.execute(
                "SELECT n.name, n.role, n.profile, n.push_interval, n.last_seen, n.clock_offset, n.info, "
                "COALESCE(s.last_seq, 0) FROM nodes n LEFT JOIN node_seq s ON s.node = n.name").fetchall()
        return [{"name": r[0], "role": r[1], "profile": r[2], "push_interval": r[3], "last_seen": r[4],
                 "clock_offset": r[5], "info": json.loads(r[6]), "last_seq": r[7]} for r in rows]

    def latest(self) -> list[Reading]:
        """The newest reading of every node/sensor/quantity (to warm the in-memory view)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT node, sensor, quantity, value, unit, MAX(ts), quality, reason FROM readings "
                "GROUP BY node, sensor, quantity").fetchall()
        return [Reading(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]

    def count(self, node: str | None = None) -> int:
        """Raw rows stored (for one node or all)."""
        with self._lock:
            if node is None:
                return self._db.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM readings WHERE node = ?", (node,)).fetchone()[0]

    def history(self, node: str, sensor: str, quantity: str, since: float, until: float,
                step: str, limit: int = 10_000) -> list[list[float]]:
        """Points of one series: [ts, value] for raw, [bucket, min, mean, max] for rollups."""
        with self._lock:
            if step == "raw":
                cur = self._db.execute(
                    "SELECT ts, value FROM readings WHERE node=? AND sensor=? AND quantity=? AND ts>=? AND ts<? "
                    "AND value IS NOT NULL ORDER BY ts LIMIT ?", (node, sensor, quantity, since, until, limit))
            else:
                cur = self._db.execute(
                    "SELECT bucket, min, mean, max FROM rollups WHERE step=? AND node=? AND sensor=? AND quantity=? "
                    "AND bucket>=? AND bucket<? ORDER BY bucket LIMIT ?",
                    (STEPS[step], node, sensor, quantity, since - STEPS[step], until, limit))
            return [list(r) for r in cur]

    def series_exists(self, node: str, sensor: str | None = None, quantity: str | None = None) -> bool:
        """True when the store holds any reading for node (and sensor, and quantity)."""
        sql, args = "SELECT 1 FROM readings WHERE node=?", [node]
        if sensor is not None:
            sql, args = sql + " AND sensor=?", [*args, sensor]
        if quantity is not None:
            sql, args = sql + " AND quantity=?", [*args, quantity]
        with self._lock:
            return self._db.execute(sql + " LIMIT 1", args).fetchone() is not None

    # -- housekeeping ---------------------------------------------------------------------
    def rollup(self) -> int:
        """Recompute every 1-minute and 1-hour bucket touched by rows inserted since the last
        run (tracked by rowid, not by clock), so late, backfilled readings land in the right
        bucket. Returns the buckets written."""
        written = 0
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='rollup_rowid'").fetchone()
            since = int(row[0]) if row else 0
            (upto,) = self._db.execute("SELECT COALESCE(MAX(rowid), 0) FROM readings").fetchone()
            if upto <= since:
                return 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for step in STEPS.values():
                    cur = self._db.execute(
                        f"""INSERT OR REPLACE INTO rollups
                        SELECT {step}, r.node, r.sensor, r.quantity, CAST(r.ts / {step} AS INTEGER) * {step} AS b,
                               MIN(r.value), AVG(r.value), MAX(r.value), COUNT(r.value)
                        FROM readings r
                        JOIN (SELECT DISTINCT node, sensor, quantity, CAST(ts / {step} AS INTEGER) * {step} AS b
                              FROM readings WHERE rowid > ? AND rowid <= ? AND value IS NOT NULL) t
                          ON r.node = t.node AND r.sensor = t.sensor AND r.quantity = t.quantity
                         AND r.ts >= t.b AND r.ts < t.b + {step}
                        WHERE r.value IS NOT NULL
                        GROUP BY r.node, r.sensor, r.quantity, b""", (since, upto))
                    written += max(cur.rowcount, 0)
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('rollup_rowid', ?)", (upto,))
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return written

    def retain(self, raw_days: float, rollup_days: float, now: float | None = None) -> dict[str, int]:
        """Delete raw readings and rollups older than their retention."""
        now = time.time() if now is None else now
        with self._lock:
            raw = self._db.execute("DELETE FROM readings WHERE ts < ?", (now - raw_days * 86400,)).rowcount
            roll = self._db.execute("DELETE FROM rollups WHERE bucket < ?", (now - rollup_days * 86400,)).rowcount
        return {"raw_deleted": raw, "rollups_deleted": roll}

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
