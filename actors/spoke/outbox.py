"""The spoke's durable outbox: batches are committed to SQLite before anything else happens
with them, and deleted only when the hub has acknowledged its own commit."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from hal.readings import Reading

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    readings TEXT NOT NULL,
    alerts TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
log = logging.getLogger(__name__)
# Batches kept in memory while the disk refuses writes: at a batch per sensor every 5 s, a
# node with four sensors rides out about 40 minutes of full disk before dropping the oldest.
MEMORY_BATCHES = 2000


def _disk_refused(exc: sqlite3.Error) -> bool:
    """SQLite's words for a write the disk refused: full, read-only, or failing."""
    text = str(exc).lower()
    return any(w in text for w in ("full", "readonly", "read-only", "disk i/o", "unable to open"))


class Outbox:
    """Bounded FIFO of (node, seq, readings) batches in SQLite; overflow drops the oldest."""

    def __init__(self, path: Path | str, node: str, max_batches: int = 100_000) -> None:
        self.node = node
        self.max_batches = max_batches
        self._lock = threading.Lock()
        # (created, readings JSON, alerts JSON) the disk refused, oldest first; written ahead of
        # anything newer as soon as a write succeeds again, so seqs keep the poll order
        self._held: deque[tuple[float, str, str]] = deque()
        self._held_dropped = 0  # held batches dropped on overflow, not yet counted on disk
        self.disk_error: str | None = None
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a batch the poll loop wrote must survive power loss, not only a crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(batches)")}
        if "alerts" not in columns:  # an outbox written before alert events travelled with batches
            self._db.execute("ALTER TABLE batches ADD COLUMN alerts TEXT NOT NULL DEFAULT '[]'")

    def append(self, readings: list[Reading], alerts: list[dict[str, Any]] | None = None) -> int | None:
        """Store one poll cycle's readings (and the alert events it caused) as a batch; returns its seq.

        When the disk refuses the write (full, read-only, failing) the batch is held in memory,
        with every batch held before it, and written first when the disk accepts writes again;
        then None is returned. Past MEMORY_BATCHES held, the oldest are dropped and counted."""
        payload = json.dumps([r.to_dict() for r in readings], separators=(",", ":"))
        events = json.dumps(alerts or [], separators=(",", ":"))
        with self._lock:
            self._held.append((time.time(), payload, events))
            return self._write_held()

    def retry(self) -> None:
        """Try again to write what the disk refused (the push job calls this every run)."""
        with self._lock:
            if self._held:
                self._write_held()

    def _write_held(self) -> int | None:
        seq = None
        try:
            while self._held:
                created, payload, events = self._held[0]
                cur = self._db.execute("INSERT INTO batches (created, readings, alerts) VALUES (?, ?, ?)",
                                       (created, payload, events))
                seq = int(cur.lastrowid or 0)
                self._held.popleft()
            if self._held_dropped:
                self._count_dropped(self._held_dropped)
                self._held_dropped = 0
            self._trim()
        except sqlite3.OperationalError as exc:
            if not _disk_refused(exc):
                raise
            self._refused(exc)
            return None
        if self.disk_error is not None:
            log.info("outbox %s accepts writes again; batches held in memory are written", self.node)
            self.disk_error = None
        return seq

    def _refused(self, exc: sqlite3.Error) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        if self.disk_error is None:
            log.error("outbox cannot write (%s): keeping up to %d batches in memory until it can; "
                      "free space in the state directory", exc, MEMORY_BATCHES)
        self.disk_error = f"disk full or not writable: {exc}"
        while len(self._held) > MEMORY_BATCHES:
            self._held.popleft()
            self._held_dropped += 1

    def _count_dropped(self, n: int) -> None:
        self._db.execute("INSERT INTO meta VALUES ('dropped', ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value", (n,))

    def _trim(self) -> None:
        (count,) = self._db.execute("SELECT COUNT(*) FROM batches").fetchone()
        excess = count - self.max_batches
        if excess > 0:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM batches WHERE seq IN (SELECT seq FROM batches ORDER BY seq LIMIT ?)",
                             (excess,))
            self._count_dropped(excess)
            self._db.execute("COMMIT")

    def peek(self, limit: int = 50, after: int = 0) -> list[dict[str, Any]]:
        """The oldest `limit` batches (with a seq above `after`), in order, as wire dicts."""
        with self._lock:
            rows = self._db.execute("SELECT seq, readings, alerts FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (after, limit)).fetchall()
        out = []
        for seq, payload, events in rows:
            batch = {"node": self.node, "seq": seq, "readings": json.loads(payload)}
            if events != "[]":
                batch["alerts"] = json.loads(events)
            out.append(batch)
        return out

    def ack(self, seqs: list[int]) -> None:
        """Delete batches the hub has committed."""
        if not seqs:
            return
        with self._lock:
            self._db.executemany("DELETE FROM batches WHERE seq = ?", [(int(s),) for s in seqs])

    def ack_upto(self, seq: int) -> int:
        """Delete every batch up to `seq` (a majority of the hubs committed them); returns how many."""
        with self._lock:
            return self._db.execute("DELETE FROM batches WHERE seq <= ?", (int(seq),)).rowcount

    def ensure_after(self, seq: int) -> None:
        """Make the next sequence number exceed `seq` (the hub's last seen for this node).

        A spoke whose outbox file was lost would otherwise restart at 1 and see its new
        batches taken for duplicates."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='batches'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('batches', ?)", (seq,))
            elif row[0] < seq:
                self._db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name='batches'", (seq,))

    def stats(self) -> dict[str, Any]:
        """Pending batches (on disk and held in memory), batches dropped on overflow, and the disk's state."""
        with self._lock:
            (size,) = self._db.execute("SELECT COUNT(*) FROM batches").fetchone()
            row = self._db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()
            held, error = len(self._held), self.disk_error
            dropped = (row[0] if row else 0) + self._held_dropped
        return {"pending_batches": size + held, "held_in_memory": held, "dropped_batches": dropped,
                "disk_full": error is not None, "disk_error": error}

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
