"""The hub store's housekeeping: rollups, daily summaries and retention (scheduled jobs on the hub)."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from actors.hub.holdings import SeqSet

STEPS = {"1m": 60, "1h": 3600}  # rollup steps: name -> seconds


class StoreHousekeeping:
    """Methods of actors.hub.store.Store that summarise and age what it holds."""

    _db: sqlite3.Connection
    _lock: threading.Lock
    keep_batches: bool
    _held: dict[str, SeqSet]
    _floor: dict[str, int]

    if TYPE_CHECKING:
        def _transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...
        def settle(self) -> None: ...

    def _lower_holdings(self, floors: dict[str, int]) -> None:
        with self._lock:
            for node, floor in floors.items():
                self._floor[node] = max(self._floor.get(node, 0), floor)
                if node in self._held:
                    self._held[node].remove_below(self._floor[node])

    def rollup(self) -> int:
        """Recompute every 1-minute and 1-hour bucket touched by rows inserted since the last
        run (tracked by id, not by clock), so late, backfilled readings land in the right
        bucket. Returns the buckets written.

        A minute is recomputed from its raw readings, an hour from its minutes: recomputing
        an hour from raw readings scanned every reading of the hour so far at each run, which
        at a thousand spokes grows to 35 million rows a minute before the hour turns."""
        self.settle()
        minute, hour = STEPS["1m"], STEPS["1h"]
        with self._transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key='rollup_id'").fetchone()
            since = int(row[0]) if row else 0
            (upto,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM samples").fetchone()
            if upto <= since:
                return 0
            written = max(db.execute(
                f"""INSERT OR REPLACE INTO rollups
                SELECT {minute}, x.series, CAST(x.ts / {minute} AS INTEGER) * {minute} AS b,
                       MIN(x.value), AVG(x.value), MAX(x.value), COUNT(x.value)
                FROM samples x
                JOIN (SELECT DISTINCT series, CAST(ts / {minute} AS INTEGER) * {minute} AS b
                      FROM samples WHERE id > ? AND id <= ? AND value IS NOT NULL) t
                  ON x.series = t.series AND x.ts >= t.b AND x.ts < t.b + {minute}
                WHERE x.value IS NOT NULL
                GROUP BY x.series, b""", (since, upto)).rowcount, 0)
            written += max(db.execute(
                f"""INSERT OR REPLACE INTO rollups
                SELECT {hour}, m.series, CAST(m.bucket / {hour} AS INTEGER) * {hour} AS b,
                       MIN(m.min), SUM(m.mean * m.n) / SUM(m.n), MAX(m.max), SUM(m.n)
                FROM rollups m
                JOIN (SELECT DISTINCT series, CAST(ts / {hour} AS INTEGER) * {hour} AS b
                      FROM samples WHERE id > ? AND id <= ? AND value IS NOT NULL) t
                  ON m.step = {minute} AND m.series = t.series AND m.bucket >= t.b AND m.bucket < t.b + {hour}
                GROUP BY m.series, b""", (since, upto)).rowcount, 0)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('rollup_id', ?)", (upto,))
        return written

    def daily_summary(self, start: float, end: float, day: str) -> int:
        """Min/mean/max per series and the alerts raised about it in [start, end), stored under
        `day`; running it again for the same day replaces that day. Returns the series summarised."""
        return self.put_summary(day, self.summary_rows(start, end, day))

    def summary_rows(self, start: float, end: float, day: str) -> list[list[Any]]:
        """The rows daily_summary stores for `day`, without storing them (several hubs: the leader
        computes them once and every hub stores what the cluster agreed on)."""
        self.settle()
        with self._lock:
            return [list(r) for r in self._db.execute(
                """SELECT ?, s.node, s.sensor, s.quantity, s.unit, MIN(x.value), AVG(x.value), MAX(x.value),
                       COUNT(x.value),
                       (SELECT COUNT(*) FROM alert_events e WHERE e.state = 'raised' AND e.node = s.node
                          AND e.sensor = s.sensor AND (e.quantity IS NULL OR e.quantity = s.quantity)
                          AND e.ts >= ? AND e.ts < ?)
                FROM samples x JOIN series s ON s.id = x.series
                WHERE x.ts >= ? AND x.ts < ? AND x.value IS NOT NULL
                GROUP BY x.series""", (day, start, end, start, end))]

    def put_summary(self, day: str, rows: list[list[Any]]) -> int:
        """Replace the stored summary of `day` with these rows; returns how many."""
        with self._transaction() as db:
            db.execute("DELETE FROM daily_summaries WHERE day = ?", (day,))
            db.executemany("INSERT INTO daily_summaries VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        return len(rows)

    def summaries(self, day: str | None = None, limit: int = 2000) -> list[dict[str, Any]]:
        """Stored daily summaries (one day, or the most recent days first)."""
        cols = ("day", "node", "sensor", "quantity", "unit", "min", "mean", "max", "n", "alerts")
        sql = f"SELECT {', '.join(cols)} FROM daily_summaries"
        args: tuple[Any, ...] = ()
        if day is not None:
            sql, args = sql + " WHERE day = ?", (day,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY day DESC, node, sensor, quantity LIMIT ?",
                                    (*args, limit)).fetchall()
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def retain(self, raw_days: float, rollup_days: float, now: float | None = None) -> dict[str, int]:
        """Delete raw readings and rollups older than their retention."""
        self.settle()
        now = time.time() if now is None else now
        with self._transaction() as db:
            # What an export target has not sent yet is counted as lost to it before it goes.
            db.execute("UPDATE export_state SET lost = lost + (SELECT COUNT(*) FROM samples WHERE ts < ? "
                       "AND id > export_state.cursor AND id < (SELECT MAX(id) FROM samples)), updated = ?",
                       (now - raw_days * 86400, now))
            raw = db.execute("DELETE FROM samples WHERE ts < ? AND id < (SELECT MAX(id) FROM samples)",
                             (now - raw_days * 86400,)).rowcount
            roll = db.execute("DELETE FROM rollups WHERE bucket < ?", (now - rollup_days * 86400,)).rowcount
            floors = self._retain_batches(db, now - raw_days * 86400) if self.keep_batches else {}
        self._lower_holdings(floors)
        return {"raw_deleted": raw, "rollups_deleted": roll}

    def _retain_batches(self, db: sqlite3.Connection, cutoff: float) -> dict[str, int]:
        """Delete kept batches received before the cutoff; a node's floor rises to the highest
        seq deleted, so a copy of one of them offered again later is not taken for new."""
        floors = dict(db.execute("SELECT node, MAX(seq) FROM batches WHERE received < ? GROUP BY node", (cutoff,)))
        db.execute("DELETE FROM batches WHERE received < ?", (cutoff,))
        db.executemany("INSERT INTO batch_floor VALUES (?, ?) ON CONFLICT(node) DO UPDATE SET "
                       "seq = MAX(seq, excluded.seq)", list(floors.items()))
        return floors
