"""The spoke's durable outbox: batches are committed to SQLite before anything else happens
with them, and deleted only when the hub has acknowledged its own commit.

A batch stamped while the board's clock was not synchronised is *held*: it carries the clock
mark of its stamps (hal.timesync.ClockMark) and neither it nor anything after it is pushed
(the hub takes seqs in order: a later batch pushed first would make the held one a repeat).
Once the clock syncs, release() corrects its stamps by the step the clock made and lets it go.
A batch the hub refuses (BadRequest) is moved to the `rejected` table with the hub's reason,
so that one bad batch cannot stop every batch behind it; nothing is deleted from there."""

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
from hal.timesync import ClockMark

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    readings TEXT NOT NULL,
    alerts TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    readings TEXT NOT NULL,
    alerts TEXT NOT NULL,
    clock TEXT,
    reason TEXT NOT NULL
);
"""
HELD_INDEX = "CREATE INDEX IF NOT EXISTS batches_held ON batches (seq) WHERE clock IS NOT NULL"
NO_SEQ = 2**63 - 1
log = logging.getLogger(__name__)
# Batches kept in memory while the disk refuses writes: at a batch per sensor every 5 s, a
# node with four sensors rides out about 40 minutes of full disk before dropping the oldest.
MEMORY_BATCHES = 2000
CACHE_KIB = 512  # the outbox connection's page cache (a negative cache_size counts KiB)


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
        # (created, readings JSON, alerts JSON, clock mark JSON) the disk refused, oldest first;
        # written ahead of anything newer as soon as a write succeeds again, so seqs keep the poll order
        self._held: deque[tuple[float, str, str, str | None]] = deque()
        self._held_dropped = 0  # held batches dropped on overflow, not yet counted on disk
        self.disk_error: str | None = None
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a batch the poll loop wrote must survive power loss, not only a crash.
        self._db.execute("PRAGMA synchronous=FULL")
        # SQLite's default page cache is 2 MB per connection, and it fills as an outbox grows
        # while the hub is away; writes go to the end and pushes read from the front, so a
        # hundred-odd pages serve both.
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._db.executescript(SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(batches)")}
        if "alerts" not in columns:  # an outbox written before alert events travelled with batches
            self._db.execute("ALTER TABLE batches ADD COLUMN alerts TEXT NOT NULL DEFAULT '[]'")
        if "clock" not in columns:  # an outbox written before unsynchronised stamps were held
            self._db.execute("ALTER TABLE batches ADD COLUMN clock TEXT")
        self._db.execute(HELD_INDEX)

    def append(self, readings: list[Reading], alerts: list[dict[str, Any]] | None = None,
               unsynced: ClockMark | None = None) -> int | None:
        """Store one poll cycle's readings (and the alert events it caused) as a batch; returns its seq.

        `unsynced`: the clock was not synchronised when they were stamped, and this is how it
        stood then; the batch is held until release(). When the disk refuses the write (full, read-only, failing) the batch is held in memory,
        with every batch held before it, and written first when the disk accepts writes again;
        then None is returned. Past MEMORY_BATCHES held, the oldest are dropped and counted."""
        payload = json.dumps([r.to_dict() for r in readings], separators=(",", ":"))
        events = json.dumps(alerts or [], separators=(",", ":"))
        mark = None if unsynced is None else json.dumps(list(unsynced))
        with self._lock:
            self._held.append((time.time(), payload, events, mark))
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
                created, payload, events, mark = self._held[0]
                cur = self._db.execute("INSERT INTO batches (created, readings, alerts, clock) VALUES (?, ?, ?, ?)",
                                       (created, payload, events, mark))
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
        """The oldest `limit` batches (with a seq above `after`), in order, as wire dicts, up to
        the first held one (see the module's doc)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, readings, alerts FROM batches WHERE seq > ? AND seq < "
                "COALESCE((SELECT MIN(seq) FROM batches WHERE clock IS NOT NULL), ?) ORDER BY seq LIMIT ?",
                (after, NO_SEQ, limit)).fetchall()
        out = []
        for seq, payload, events in rows:
            batch = {"node": self.node, "seq": seq, "readings": json.loads(payload)}
            if events != "[]":
                batch["alerts"] = json.loads(events)
            out.append(batch)
        return out

    def held(self) -> int:
        """How many batches wait for the clock to sync."""
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM batches WHERE clock IS NOT NULL").fetchone()
        return int(n) + sum(1 for item in self._held if item[3] is not None)

    def release(self, now: ClockMark) -> tuple[int, int]:
        """The clock is synchronised now (and stands at `now`): let the held batches go.

        A batch held in this boot has its stamps (readings' ts, alert events' ts and since)
        moved by the step the wall clock made since they were taken: the change of the wall
        clock against the monotonic one. A batch held in an earlier boot cannot be corrected
        (the monotonic clock restarted with the board), so it is moved to `rejected` with the
        reason, rather than sent with times known to be wrong. Returns (released, set aside)."""
        released = set_aside = 0
        with self._lock:
            rows = self._db.execute("SELECT seq, created, readings, alerts, clock FROM batches "
                                    "WHERE clock IS NOT NULL ORDER BY seq").fetchall()
            if not rows:
                return 0, 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for seq, created, payload, events, mark_json in rows:
                    boot, offset = json.loads(mark_json)
                    if boot != now.boot:
                        self._set_aside(seq, created, payload, events, mark_json, UNCORRECTABLE)
                        set_aside += 1
                        continue
                    step = now.offset - float(offset)
                    self._db.execute("UPDATE batches SET readings = ?, alerts = ?, clock = NULL WHERE seq = ?",
                                     (_shifted(payload, ("ts",), step), _shifted(events, ("ts", "since"), step),
                                      seq))
                    released += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if released or set_aside:
            log.info("clock synchronised: %d held batches released (stamps corrected by the clock's step), "
                     "%d from an earlier boot set aside as rejected", released, set_aside)
        return released, set_aside

    def reject(self, seq: int, reason: str) -> None:
        """The hub refused batch `seq` for good: keep it in `rejected` with the reason, out of the way."""
        with self._lock:
            row = self._db.execute("SELECT seq, created, readings, alerts, clock FROM batches WHERE seq = ?",
                                   (int(seq),)).fetchone()
            if row is None:
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._set_aside(*row, reason)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        log.error("outbox %s: the hub refused batch %d; it is kept in the outbox's rejected table: %s",
                  self.node, seq, reason)

    def _set_aside(self, seq: int, created: float, payload: str, events: str, mark: str | None,
                   reason: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO rejected VALUES (?, ?, ?, ?, ?, ?)",
                         (seq, created, payload, events, mark, reason[:1000]))
        self._db.execute("DELETE FROM batches WHERE seq = ?", (seq,))

    def rejected(self, limit: int = 100) -> list[dict[str, Any]]:
        """Batches set aside (the hub refused them, or their stamps could not be corrected), oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT seq, created, readings, alerts, reason FROM rejected "
                                    "ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [{"seq": seq, "created": created, "readings": json.loads(payload), "alerts": json.loads(events),
                 "reason": reason} for seq, created, payload, events, reason in rows]

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
            (unsynced,) = self._db.execute("SELECT COUNT(*) FROM batches WHERE clock IS NOT NULL").fetchone()
            unsynced += sum(1 for item in self._held if item[3] is not None)
            (rejected,) = self._db.execute("SELECT COUNT(*) FROM rejected").fetchone()
        return {"pending_batches": size + held, "held_in_memory": held, "dropped_batches": dropped,
                "disk_full": error is not None, "disk_error": error, "held_unsynced": unsynced,
                "rejected_batches": rejected}

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


UNCORRECTABLE = ("stamped while the clock was not synchronised, and the board restarted before it synced: "
                 "the step its clock made cannot be measured, so the readings' true times are unknown")


def _shifted(text: str, keys: tuple[str, ...], step: float) -> str:
    """A JSON list of objects with the numbers under `keys` moved by `step` seconds."""
    items = json.loads(text)
    if not step or not items:
        return text
    for item in items:
        for key in keys:
            value = item.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                item[key] = round(value + step, 6)
    return json.dumps(items, separators=(",", ":"))
