"""The hub store's housekeeping: rollups, daily summaries and retention (scheduled jobs on the hub)."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from actors.hub.holdings import SeqSet

STEPS = {"1m": 60, "1h": 3600}  # rollup steps: name -> seconds
ROLLUP_SLICE = 100_000  # samples folded per transaction
ROLLUP_PAUSE_S = 0.02


class StoreHousekeeping:
    """Methods of actors.hub.store.Store that summarise and age what it holds."""

    _db: sqlite3.Connection
    _lock: threading.Lock
    keep_batches: bool
    _held: dict[str, SeqSet]
    _floor: dict[str, int]

    if TYPE_CHECKING:
        def _transaction(self, samples: bool = False) -> AbstractContextManager[sqlite3.Connection]: ...
        def settle(self) -> None: ...

    def _lower_holdings(self, floors: dict[str, int]) -> None:
        with self._lock:
            for node, floor in floors.items():
                self._floor[node] = max(self._floor.get(node, 0), floor)
                if node in self._held:
                    self._held[node].remove_below(self._floor[node])

    def rollup(self) -> int:
        """Fold the readings inserted since the last run (tracked by id, not by clock) into their
        1-minute and 1-hour buckets; returns the buckets written.

        A bucket's min, max, count and mean are merged with the new readings' (late, backfilled
        readings land in the right bucket), so a run reads only what is new: recomputing each
        touched bucket from every raw reading in it scanned, at a thousand spokes, 1.2 million
        rows a minute for the minutes and up to 35 million before the top of the hour. A bucket
        also keeps what raw retention deleted since."""
        self.settle()
        written = 0
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='rollup_id'").fetchone()
            since = int(row[0]) if row else 0
            (top,) = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM samples").fetchone()
        # in slices, each its own transaction, with a pause between: a minute of a thousand
        # spokes is 600,000 readings, and one transaction over them held the store lock (and
        # the hub's one core) for over a second
        while since < top:
            upto = min(top, since + ROLLUP_SLICE)
            written += self._fold(since, upto)
            since = upto
            if since < top:
                time.sleep(ROLLUP_PAUSE_S)
        return written

    def _fold(self, since: int, upto: int) -> int:
        """Fold samples with since < id <= upto into the rollups and move the cursor, in one transaction."""
        written = 0
        with self._transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key='rollup_id'").fetchone()
            if (int(row[0]) if row else 0) != since:  # another run folded these already
                return 0
            for step in STEPS.values():
                cur = db.execute(
                    f"""INSERT INTO rollups (step, series, bucket, min, mean, max, n)
                    SELECT {step}, series, CAST(ts / {step} AS INTEGER) * {step} AS b,
                           MIN(value), AVG(value), MAX(value), COUNT(value)
                    FROM samples WHERE id > ? AND id <= ? AND value IS NOT NULL
                    GROUP BY series, b
                    ON CONFLICT (step, series, bucket) DO UPDATE SET
                        min = MIN(min, excluded.min), max = MAX(max, excluded.max),
                        mean = (mean * n + excluded.mean * excluded.n) / (n + excluded.n), n = n + excluded.n""",
                    (since, upto))
                written += max(cur.rowcount, 0)
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
        with self._transaction(samples=True) as db:
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
