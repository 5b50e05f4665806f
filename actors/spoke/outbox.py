"""The spoke's durable outbox: batches are committed to SQLite before anything else happens
with them, and deleted only when the hub has acknowledged its own commit."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
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


class Outbox:
    """Bounded FIFO of (node, seq, readings) batches in SQLite; overflow drops the oldest."""

    def __init__(self, path: Path | str, node: str, max_batches: int = 100_000) -> None:
        self.node = node
        self.max_batches = max_batches
        self._lock = threading.Lock()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a batch the poll loop wrote must survive power loss, not only a crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(batches)")}
        if "alerts" not in columns:  # an outbox written before alert events travelled with batches
            self._db.execute("ALTER TABLE batches ADD COLUMN alerts TEXT NOT NULL DEFAULT '[]'")

    def append(self, readings: list[Reading], alerts: list[dict[str, Any]] | None = None) -> int:
        """Store one poll cycle's readings (and the alert events it caused) as a batch; returns its seq."""
        payload = json.dumps([r.to_dict() for r in readings], separators=(",", ":"))
        events = json.dumps(alerts or [], separators=(",", ":"))
        with self._lock:
            cur = self._db.execute("INSERT INTO batches (created, readings, alerts) VALUES (?, ?, ?)",
                                   (time.time(), payload, events))
            seq = int(cur.lastrowid or 0)
            self._trim()
            return seq

    def _trim(self) -> None:
        (count,) = self._db.execute("SELECT COUNT(*) FROM batches").fetchone()
        excess = count - self.max_batches
        if excess > 0:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM batches WHERE seq IN (SELECT seq FROM batches ORDER BY seq LIMIT ?)",
                             (excess,))
            self._db.execute("INSERT INTO meta VALUES ('dropped', ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value", (excess,))
            self._db.execute("COMMIT")

    def peek(self, limit: int = 50) -> list[dict[str, Any]]:
        """The oldest `limit` batches, in order, as wire dicts."""
        with self._lock:
            rows = self._db.execute("SELECT seq, readings, alerts FROM batches ORDER BY seq LIMIT ?",
                                    (limit,)).fetchall()
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

    def stats(self) -> dict[str, int]:
        """Pending batches and readings dropped on overflow."""
        with self._lock:
            (size,) = self._db.execute("SELECT COUNT(*) FROM batches").fetchone()
            row = self._db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()
        return {"pending_batches": size, "dropped_batches": row[0] if row else 0}

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
