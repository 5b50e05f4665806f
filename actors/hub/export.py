"""Every reading the hub stores, streamed to a time-series engine in InfluxDB line protocol.

Each `[[export]]` target has a thread that reads what the store has committed, in commit order
(samples.id), from a read-only connection of its own, so neither a slow engine nor the reads
hold up ingest. A page goes out as one HTTP POST; the target's cursor (the last id sent) is
written only after the engine answered 2xx, so a crash between the two sends the page again,
which is harmless: a point with the same measurement, tags and timestamp overwrites itself.

- 5xx, 408, 429, timeouts and refused connections: retried with backoff (1 s doubling to 60 s).
- Any other 4xx (bad credentials, unknown database): the target stops with that error, which
  health, the dashboard and /metrics show, instead of hammering the engine. A restart of the
  hub (after fixing the config or the engine) tries again.
- 413 (page too large): the page is halved and tried again, down to 100 readings.

With several hubs only the Raft leader sends. Which batches (node, seq) a target has taken is
replicated through Raft (actors.hub.cluster), and a hub that does not lead moves its own cursor
over what the leader exported, so the hub that leads after a fail-over starts where the
exports stopped rather than at the beginning of its store.

Line format (one line per reading; timestamps are the spoke's, in ns):
    harvester,node=pi4,sensor=dht,quantity=temperature,unit=°C,quality=ok value=23.4 1764763200123000000
    harvester,node=pi4,sensor=dht,quantity=temperature,unit=°C,quality=unavailable unavailable=1 ...
"""

from __future__ import annotations

import base64
import logging
import random
import sqlite3
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from actors.hub.indexer import data_path
from actors.node.config import ExportTarget

log = logging.getLogger(__name__)
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
MIN_PAGE = 100  # a 413 halves the page down to this
PAGES_PER_ROUND = 50  # pages sent back to back before the thread looks at its schedule again
BACKLOG_CAP = 1_000_000  # the backlog is counted up to this (a count beyond costs a long scan)
BACKLOG_TTL_S = 5.0  # a backlog count is reused this long unless the cursor moved
RETRYABLE_4XX = (408, 429)


class Sample(NamedTuple):
    """One stored reading as the exporter reads it."""

    id: int
    node: str
    sensor: str
    quantity: str
    unit: str
    ts: float
    value: float | None
    quality: str
    reason: str | None
    seq: int


PAGE_SQL = ("SELECT x.id, s.node, s.sensor, s.quantity, s.unit, x.ts, x.value, x.quality, x.reason, x.seq "
            "FROM samples x JOIN series s ON s.id = x.series WHERE x.id > ? ORDER BY x.id LIMIT ?")


def _escape_key(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def encode(samples: Iterable[Sample], measurement: str) -> bytes:
    """Line protocol for the samples (tag values escaped; an unavailable reading as `unavailable=1`)."""
    lines = []
    m = _escape_key(measurement)
    for s in samples:
        tags = (f"{m},node={_escape_key(s.node)},sensor={_escape_key(s.sensor)},quantity={_escape_key(s.quantity)},"
                f"unit={_escape_key(s.unit)},quality={_escape_key(s.quality)}")
        # No reason field for an unavailable reading: engines without strings (VictoriaMetrics) turn
        # one into a series of zeros. The reason stays in the hub's store and on its dashboard.
        fields = "unavailable=1" if s.value is None else f"value={float(s.value)!r}"
        # microseconds from the float, then ns: the same reading always gives the same timestamp
        lines.append(f"{tags} {fields} {round(s.ts * 1e6) * 1000}")
    return ("\n".join(lines) + "\n").encode()


class Rejected(Exception):
    """The engine refused the data for good (4xx): retrying the same request cannot help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(Exception):
    """The engine could not take the data now (5xx, 408, 429, timeout, no connection)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Sink(Protocol):
    """Where pages go: an HTTP write endpoint (or a test's stand-in)."""

    def send(self, body: bytes) -> None:
        """Deliver one page; Rejected or Unreachable when it was not taken."""
        ...


class HttpSink:
    """POSTs line protocol to an InfluxDB-compatible write endpoint (v1 `db`, v2 `org`/`bucket`)."""

    def __init__(self, target: ExportTarget) -> None:
        self.target = target
        query = {"db": target.database} if target.database else {}
        if target.bucket:
            query = {"org": target.org, "bucket": target.bucket} if target.org else {"bucket": target.bucket}
        parts = urllib.parse.urlsplit(target.url)
        extra = urllib.parse.urlencode({**dict(urllib.parse.parse_qsl(parts.query)), **query, "precision": "ns"})
        self.url = urllib.parse.urlunsplit(parts._replace(query=extra))
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        if target.token_file is not None:
            self.headers["Authorization"] = f"{target.token_scheme} {_secret(target.token_file, 'token_file')}"
        elif target.username:
            assert target.password_file is not None
            pair = f"{target.username}:{_secret(target.password_file, 'password_file')}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self._context = ssl.create_default_context(cafile=str(target.ca)) if target.ca else None

    def send(self, body: bytes) -> None:
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.target.timeout, context=self._context) as answer:
                answer.read()
        except urllib.error.HTTPError as exc:
            text = _excerpt(exc.read())
            message = f"HTTP {exc.code} {exc.reason}" + (f": {text}" if text else "")
            if 400 <= exc.code < 500 and exc.code not in RETRYABLE_4XX:
                raise Rejected(exc.code, message) from None
            raise Unreachable(message, _retry_after(exc.headers.get("Retry-After"))) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__) from None


def _secret(path: Path, key: str) -> str:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise Rejected(0, f"cannot read {key} {path}: {exc.strerror or exc}") from None
    if not text:
        raise Rejected(0, f"{key} {path} is empty")
    return text


def _excerpt(raw: bytes, limit: int = 200) -> str:
    text = raw.decode("utf-8", "replace").strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"


def _retry_after(value: str | None) -> float | None:
    try:
        return min(BACKOFF_MAX_S, max(0.0, float(value))) if value else None
    except ValueError:
        return None


class Ledger(Protocol):
    """Several hubs: which batches each target has exported, agreed through Raft."""

    def leads(self) -> bool:
        """True on the hub that sends."""
        ...

    def exported(self, target: str, node: str, seq: int) -> bool:
        """True when some hub's export of `target` took batch (node, seq)."""
        ...

    def mark_exported(self, target: str, pairs: list[tuple[str, int]]) -> None:
        """Record batches a page carried (asynchronous; a lost record only means a resend)."""
        ...


class Exporter:
    """One target's thread: read a page after the cursor, send it, advance the cursor."""

    def __init__(self, target: ExportTarget, db_path: Path, store: Any, *, sink: Sink | None = None,
                 ledger: Ledger | None = None, clock: Callable[[], float] = time.time) -> None:
        self.target = target
        self.name = target.name
        self._db_path = db_path
        self._store = store
        self._sink_override = sink
        self._sink: Sink | None = sink
        self._ledger = ledger
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._page = target.batch_size
        self._failures = 0
        self._next_try = 0.0
        self._more = False  # the last round stopped with pages left
        self._backlog: tuple[int, float, tuple[int, float | None]] | None = None  # (cursor, when, count)
        state = store.export_state(self.name)
        store.save_export(self.name, state["cursor"], 0)  # a row from now on, so retention counts losses
        self.cursor: int = state["cursor"]
        self.sent: int = state["sent"]
        self.lost: int = state["lost"]
        self.stopped: str | None = None  # the permanent error, once the target stopped
        self.last_error: str | None = None
        self.error_since: float | None = None
        self.last_ok: float | None = None
        self.sending = False  # this hub sends (always with one hub; the leader with several)

    # -- running ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread (it sends at once, then every flush_interval while there is nothing new)."""
        self._thread = threading.Thread(target=self._run, name=f"export:{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (a page being sent finishes or times out first)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._db is not None:
            self._db.close()
            self._db = None

    def nudge(self) -> None:
        """New readings were stored: look now rather than at the next flush (used by tests and the bench)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 (a closed store at shutdown; the thread must not die)
                log.exception("export %s: unexpected error; trying again at the next flush", self.name)
            if self._more and not self.last_error:
                continue  # a backlog: the next round at once
            self._wake.wait(self._delay())
            self._wake.clear()

    def _delay(self) -> float:
        if self.stopped:
            return 3600.0
        wait = self._next_try - self._clock()
        return max(0.05, min(self.target.flush_interval, wait)) if wait > 0 else self.target.flush_interval

    def step(self) -> int:
        """One round: up to PAGES_PER_ROUND pages while there is a backlog; returns readings sent."""
        self._more = False
        if self.stopped or self._clock() < self._next_try:
            return 0
        if self._ledger is not None and not self._ledger.leads():
            self.sending = False
            self._follow()
            return 0
        self.sending = True
        total = 0
        for _ in range(PAGES_PER_ROUND):
            rows = self._read(self.cursor, self._page + 1)  # one more: does the last batch go on?
            page = rows[:self._page]
            if not page:
                return total
            todo = self._unsent(page)
            if todo and not self._send(todo):
                return total
            split = len(rows) > len(page) and (rows[-1].node, rows[-1].seq) == (page[-1].node, page[-1].seq)
            self._advance(page, len(todo), split)
            total += len(todo)
            if len(rows) <= self._page or self._stop.is_set():
                return total
        self._more = True
        return total

    def _unsent(self, page: list[Sample]) -> list[Sample]:
        """The page without what another hub already exported (several hubs, after a fail-over)."""
        if self._ledger is None:
            return page
        ledger = self._ledger
        return [s for s in page if not ledger.exported(self.name, s.node, s.seq)]

    def _send(self, page: list[Sample]) -> bool:
        if self._sink is None:
            try:
                self._sink = HttpSink(self.target)
            except Rejected as exc:
                self._stopped(str(exc))
                return False
        try:
            self._sink.send(encode(page, self.target.measurement))
        except Rejected as exc:
            if exc.status == 413 and self._page > MIN_PAGE:
                self._page = max(MIN_PAGE, self._page // 2)
                log.warning("export %s: %s; sending %d readings at a time", self.name, exc, self._page)
                return False
            self._stopped(str(exc))
            return False
        except Unreachable as exc:
            self._retry_later(str(exc), exc.retry_after)
            return False
        if self.last_error is not None:
            log.info("export %s: the engine takes readings again", self.name)
        self._failures, self.last_error, self.error_since, self.last_ok = 0, None, None, self._clock()
        return True

    def _advance(self, page: list[Sample], sent: int, split: bool) -> None:
        """Move the cursor over a page the engine took; persist it, then tell the cluster."""
        self.cursor = page[-1].id
        self.sent += sent
        self._store.save_export(self.name, self.cursor, sent)
        if self._ledger is not None:
            # A batch the page ends inside is recorded with the page that completes it.
            last = (page[-1].node, page[-1].seq) if split else None
            pairs = sorted({(s.node, s.seq) for s in page} - {last})
            if pairs:
                self._ledger.mark_exported(self.name, pairs)

    def _follow(self) -> None:
        """Not the leader: move the cursor over the batches the cluster says were exported."""
        assert self._ledger is not None
        page = self._read(self.cursor, self._page)
        upto = self.cursor
        for s in page:
            if not self._ledger.exported(self.name, s.node, s.seq):
                break
            upto = s.id
        if upto != self.cursor:
            self.cursor = upto
            self._store.save_export(self.name, upto, 0)

    def _retry_later(self, error: str, retry_after: float | None) -> None:
        now = self._clock()
        if self.last_error is None:
            log.warning("export %s: %s; retrying with backoff (readings wait in the hub's store)", self.name, error)
            self.error_since = now
        self.last_error = error
        delay = retry_after if retry_after is not None else min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** self._failures)
        self._failures += 1
        self._next_try = now + delay * random.uniform(0.8, 1.0)

    def _stopped(self, error: str) -> None:
        self.stopped = error
        self.last_error = error
        self.error_since = self.error_since or self._clock()
        log.error("export %s stopped: %s; fix the target's config or the engine and restart the hub "
                  "(the readings wait in the hub's store, within its retention)", self.name, error)

    # -- reading the store -----------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(f"file:{self._db_path}?mode=ro", uri=True, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("ATTACH ? AS data", (f"file:{data_path(self._db_path)}?mode=ro",))
        return self._db

    def _read(self, after: int, limit: int) -> list[Sample]:
        self._store.settle()  # what was acknowledged is in samples, where the pages come from
        with self._lock:
            return [Sample._make(r) for r in self._conn().execute(PAGE_SQL, (after, limit))]

    def backlog(self) -> tuple[int, float | None]:
        """(readings stored after the cursor, up to BACKLOG_CAP; when the oldest of them arrived).

        Counted at most every BACKLOG_TTL_S: the dashboard asks every second, and behind a long
        outage the count is a scan of up to a million rows."""
        now = time.monotonic()
        if self._backlog is not None and self._backlog[0] == self.cursor and now - self._backlog[1] < BACKLOG_TTL_S:
            return self._backlog[2]
        counted = self._count_backlog()
        self._backlog = (self.cursor, now, counted)
        return counted

    def _count_backlog(self) -> tuple[int, float | None]:
        self._store.settle()
        with self._lock:
            db = self._conn()
            (count,) = db.execute("SELECT COUNT(*) FROM (SELECT 1 FROM samples WHERE id > ? LIMIT ?)",
                                  (self.cursor, BACKLOG_CAP)).fetchone()
            row = db.execute("SELECT received FROM samples WHERE id > ? ORDER BY id LIMIT 1", (self.cursor,)).fetchone()
        return count, (row[0] if row else None)

    def status(self) -> dict[str, Any]:
        """What health, the dashboard and /metrics show about this target."""
        backlog, oldest = self.backlog()
        self.lost = self._store.export_state(self.name)["lost"]
        now = self._clock()
        if self.stopped:
            state = "stopped"
        elif self._ledger is not None and not self.sending:
            state = "standby"
        elif self.last_error:
            state = "retrying"
        else:
            state = "ok"
        return {"name": self.name, "url": _public_url(self.target.url), "state": state, "sent": self.sent,
                "backlog": backlog, "behind_s": round(now - oldest, 1) if oldest is not None else 0.0,
                "lost": self.lost, "last_error": self.last_error, "error_since": self.error_since,
                "last_ok": self.last_ok}


def _public_url(url: str) -> str:
    """The URL without credentials or query (what a dashboard may show)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def describe(status: dict[str, Any]) -> str:
    """One line about a target, for `harvester health` and logs."""
    head = f"export {status['name']}: {status['state']}"
    parts = [f"{status['sent']} sent"]
    if status["backlog"]:
        parts.append(f"{status['backlog']} behind (oldest {status['behind_s']:.0f} s)")
    if status["lost"]:
        parts.append(f"{status['lost']} deleted by retention before they were sent")
    if status["last_error"]:
        since = time.strftime("%H:%M:%S", time.localtime(status["error_since"])) if status["error_since"] else "?"
        parts.append(f"since {since}: {status['last_error']}")
    return f"{head}, " + ", ".join(parts)
