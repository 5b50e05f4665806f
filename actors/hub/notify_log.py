"""The hub store's notification tables: each channel's start, the durable queue, what was sent.

A mixin of actors.hub.store.Store (one connection, one lock, one writer), kept apart so the
store's own file stays about readings and alerts."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any


class NotifyLog:
    """Methods of actors.hub.store.Store that keep the notifications' queue (actors.hub.notify)."""

    _db: sqlite3.Connection
    _lock: threading.Lock

    if TYPE_CHECKING:
        def _transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def _alert_rows(self, where: str, args: tuple[Any, ...], limit: int) -> list[dict[str, Any]]: ...

    def alerts_changed_since(self, t: float) -> list[dict[str, Any]]:
        """Alert rows raised, changed or acknowledged since t, and every active one."""
        return self._alert_rows("WHERE active = 1 OR since >= ? OR updated >= ? OR acked_ts >= ?", (t, t, t), 100_000)

    def notify_channel_start(self, name: str, now: float) -> float:
        """When the channel was first configured on this hub (now, the first time)."""
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO notify_channels (name, started) VALUES (?, ?)", (name, now))
            (started,) = db.execute("SELECT started FROM notify_channels WHERE name = ?", (name,)).fetchone()
        return started

    def notify_keys(self, channel: str, since: float) -> set[str]:
        """Keys queued, or sent since a time, for a channel."""
        with self._lock:
            queued = {k for (k,) in self._db.execute("SELECT key FROM notify_queue WHERE channel = ?", (channel,))}
            sent = {k for (k,) in self._db.execute("SELECT key FROM notify_sent WHERE channel = ? AND sent >= ?",
                                                   (channel, since))}
        return queued | sent

    def notify_sent_since(self, channel: str, since: float) -> list[float]:
        """When the channel delivered messages since a time (for its rate cap), oldest first."""
        with self._lock:
            return [t for (t,) in self._db.execute("SELECT sent FROM notify_sent WHERE channel = ? AND sent >= ? "
                                                   "AND counted = 1 ORDER BY sent", (channel, since))]

    def notify_enqueue(self, rows: list[tuple[str, str, str, str, float]], now: float) -> int:
        """Queue (channel, key, kind, message JSON, due) unless that key is queued or sent; returns how many."""
        added = 0
        with self._transaction() as db:
            for channel, key, kind, message, due in rows:
                if db.execute("SELECT 1 FROM notify_sent WHERE channel = ? AND key = ?", (channel, key)).fetchone():
                    continue
                added += db.execute("INSERT OR IGNORE INTO notify_queue (channel, key, kind, message, due, queued) "
                                    "VALUES (?,?,?,?,?,?)", (channel, key, kind, message, due, now)).rowcount
        return added

    def notify_due(self, channel: str, now: float, limit: int) -> list[tuple[str, str, str, bool]]:
        """(key, kind, message JSON, held) of the channel's messages due by now, in order (not those
        quiet hours hold for their digest)."""
        with self._lock:
            rows = self._db.execute("SELECT key, kind, message, held FROM notify_queue WHERE channel = ? AND due <= ? "
                                    "AND held = 0 ORDER BY due, key LIMIT ?", (channel, now, limit)).fetchall()
        return [(k, kind, m, bool(h)) for k, kind, m, h in rows]

    def notify_done(self, channel: str, key: str, now: float, receipt: str, counted: bool = False) -> None:
        """Record a message's outcome and take it off the queue, in one transaction."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO notify_sent VALUES (?,?,?,?,?)", (channel, key, now, receipt[:500],
                                                                               int(counted)))
            db.execute("DELETE FROM notify_queue WHERE channel = ? AND key = ?", (channel, key))

    def notify_attempt(self, channel: str, key: str, error: str) -> None:
        """A try that failed for now."""
        with self._transaction() as db:
            db.execute("UPDATE notify_queue SET attempts = attempts + 1, last_error = ? WHERE channel = ? AND key = ?",
                       (error[:500], channel, key))

    def notify_hold(self, channel: str, key: str) -> None:
        """Held for the digest at the end of quiet hours."""
        with self._transaction() as db:
            db.execute("UPDATE notify_queue SET held = 1 WHERE channel = ? AND key = ?", (channel, key))

    def notify_held(self, channel: str) -> list[tuple[str, str]]:
        """(key, message JSON) of what quiet hours held."""
        with self._lock:
            return list(self._db.execute("SELECT key, message FROM notify_queue WHERE channel = ? AND held = 1 "
                                         "ORDER BY due, key", (channel,)))

    def notify_add_suppressed(self, channel: str, delta: int) -> None:
        """Count messages the rate cap suppressed (and take them off once the summary is queued)."""
        with self._transaction() as db:
            db.execute("UPDATE notify_channels SET suppressed = MAX(0, suppressed + ?) WHERE name = ?",
                       (delta, channel))

    def notify_suppressed(self, channel: str) -> int:
        """Suppressed messages not yet summed up in a message."""
        with self._lock:
            row = self._db.execute("SELECT suppressed FROM notify_channels WHERE name = ?", (channel,)).fetchone()
        return row[0] if row else 0

    def notify_waiting(self, channel: str) -> int:
        """Messages queued for the channel."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM notify_queue WHERE channel = ?", (channel,)).fetchone()[0]
