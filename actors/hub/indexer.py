"""The hub store's indexer: a process of its own that moves acknowledged batches from the
ingest log (in the store's file) into the samples file beside it.

A push is acknowledged once its batches are rows of `ingest_log`, committed with
synchronous=FULL. Inserting each reading into `samples` and its (series, ts) index costs
about as much as the push itself, and a thread doing it shared the GIL with the pushes: the
hub then took each push's time plus the indexing's, one after the other. In a process of its
own, on a file of its own (so that its transactions never wait for the pushes' write lock,
nor they for its), the indexing runs beside the pushes. `bench/bench_ingest.py` measures it.

Durability: a move commits the samples and the last log id it moved (`moved`) in one
transaction of the samples file. Those commits skip fsync; about once a second one commit
syncs, and only up to that one ("durable") may the hub delete log rows. A power cut can lose
the unsynced moves, never a log row that is not durably moved: the next start moves them again.

The protocol on the pipes is one line at a time. The hub writes a line to wake the indexer
when it logged batches (one line until the indexer reports: it moves whatever is logged by
then), and closes stdin to stop it (after a last durable commit). The indexer writes
`moved <id> <durable id>` after each commit and `error <text>` when a move fails (a full
disk): it retries every second."""

from __future__ import annotations

import logging
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import msgpack

CHUNK = 50  # log rows (pushes) moved per transaction: enough to amortise the commit
DURABLE_EVERY_S = 1.0  # how often a move syncs (the hub deletes log rows up to the last synced one)
RETRY_S = 1.0
GATHER_S = 0.05  # a logged batch waits this long for others to share its move's transaction
DATA_SCHEMA = """
CREATE TABLE IF NOT EXISTS data.samples (
    -- rollups and exports track what is new by id; ids are never reused because retention
    -- never deletes the newest row (AUTOINCREMENT would guarantee it at ~2 us per insert)
    id INTEGER PRIMARY KEY,
    series INTEGER NOT NULL, ts REAL NOT NULL, value REAL,
    quality TEXT NOT NULL, reason TEXT, seq INTEGER NOT NULL, received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS data.samples_series_ts ON samples (series, ts);
-- the last ingest_log id whose readings are in samples
CREATE TABLE IF NOT EXISTS data.moved (one INTEGER PRIMARY KEY CHECK (one = 1), log_id INTEGER NOT NULL);
INSERT OR IGNORE INTO data.moved VALUES (1, 0);
"""
# A log row holds a push's batches as msgpack, [[node, seq, rows], ...]. A drained backlog (up
# to 500 batches a push) packs to tens of kilobytes, nearly all of it the same few names over and
# over: zlib at level 1 shrinks 50 batches of 10 readings from 20 kB to 1.5 kB in about 30 us,
# so the push's commit writes 3 pages of the write-ahead log instead of 8, and the log needs
# checkpointing less than half as often (bench/bench_ingest.py counts the pages). A spoke
# keeping up pushes a few hundred bytes, which stay as they are.
COMPRESS_FROM = 4096  # bytes of msgpack
_ZLIB_FIRST = b"x"  # a zlib stream's first byte; a packed log row (an array) begins with 0x90-0x9f, 0xdc or 0xdd
INSERT_SAMPLE = "INSERT INTO samples (series, ts, value, quality, reason, seq, received) VALUES (?,?,?,?,?,?,?)"
log = logging.getLogger(__name__)


def data_path(path: Path | str) -> Path:
    """The samples file beside a store's file: hub.sqlite3 -> hub.samples.sqlite3."""
    path = Path(path)
    return path.with_name(f"{path.stem}.samples{path.suffix}")


def pack_logged(batches: list[tuple[str, int, list[Any]]]) -> bytes:
    """A log row's `batches` column: [(node, seq, rows), ...] packed, compressed when large."""
    packed = msgpack.packb(batches)
    return zlib.compress(packed, 1) if len(packed) >= COMPRESS_FROM else packed


def unpack_logged(blob: bytes) -> list[list[Any]]:
    """A log row's batches, [[node, seq, rows], ...], compressed or not (see pack_logged)."""
    return msgpack.unpackb(zlib.decompress(blob) if blob[:1] == _ZLIB_FIRST else blob)


def logged_samples(logged: Iterable[tuple[Any, ...]],
                   series: Callable[[str, str, str], int]) -> list[tuple[Any, ...]]:
    """ingest_log rows (id, received, batches) as samples rows (series, ts, value, quality,
    reason, seq, received); `series(node, sensor, quantity)` gives a series' id."""
    return [(series(node, sensor, quantity), ts, value, quality, reason, seq, received)
            for _, received, packed in logged
            for node, seq, rows in unpack_logged(packed)
            for sensor, quantity, value, _unit, ts, quality, reason in rows]


class Indexer:
    """The indexer process's work: move logged batches in chunks, report, sync once a second."""

    def __init__(self, store: Path, out: IO[str], max_pages: int = 0) -> None:
        self.out = out
        # the Store created both files and their tables before it started this process
        self.db = sqlite3.connect(str(data_path(store)), isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.max_pages = max_pages
        # The log is read on a connection of its own: a transaction here then locks only the
        # samples file (BEGIN IMMEDIATE on a connection with the store attached would take the
        # store's write lock too, and every push would wait for the move under way).
        self.log = sqlite3.connect(str(store), isolation_level=None, timeout=30)
        self._series: dict[tuple[str, str, str], int] = {}
        (self.moved,) = self.db.execute("SELECT log_id FROM moved").fetchone()
        self.durable = self.moved
        self.synced_at = time.monotonic()

    def series(self, node: str, sensor: str, quantity: str) -> int:
        key = (node, sensor, quantity)
        sid = self._series.get(key)
        if sid is None:  # the push that logged the batch created its series first
            self._series = {(n, s, q): i for i, n, s, q in self.log.execute(
                "SELECT id, node, sensor, quantity FROM series")}
            sid = self._series[key]
        return sid

    def move(self) -> int:
        """One transaction: up to CHUNK log rows after the mark; returns how many.

        The mark is read under the samples file's write lock, so that a second indexer on the
        same files (a hub started twice by mistake) never moves a row twice."""
        sync = time.monotonic() - self.synced_at >= DURABLE_EVERY_S
        if self.max_pages:  # the store's size cap (store.max_mb) holds for both files together
            (hub_pages,) = self.log.execute("PRAGMA page_count").fetchone()
            self.db.execute(f"PRAGMA max_page_count = {max(16, self.max_pages - hub_pages)}")
        if sync:
            self.db.execute("PRAGMA synchronous=FULL")
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                (moved,) = self.db.execute("SELECT log_id FROM moved").fetchone()
                logged = self.log.execute("SELECT id, received, batches FROM ingest_log WHERE id > ? "
                                          "ORDER BY id LIMIT ?", (moved, CHUNK)).fetchall()
                if logged:
                    self.db.executemany(INSERT_SAMPLE, logged_samples(logged, self.series))
                    moved = logged[-1][0]
                    self.db.execute("UPDATE moved SET log_id = ?", (moved,))
                elif not (sync and self.durable < moved):
                    self.db.execute("ROLLBACK")
                    if moved != self.moved:  # another indexer on these files moved them (see above)
                        self.moved = moved
                        self._report()
                    return 0
                else:  # nothing new, but moves since the last sync are not durable yet: a write that syncs
                    self.db.execute("UPDATE moved SET log_id = log_id")
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        finally:
            if sync:
                self.db.execute("PRAGMA synchronous=NORMAL")
        self.moved = moved
        if sync:
            self.durable, self.synced_at = moved, time.monotonic()
        self._report()
        return len(logged)

    def _report(self) -> None:
        self.out.write(f"moved {self.moved} {self.durable}\n")
        self.out.flush()

    def run(self, wake: int) -> None:
        """Move until `wake` (the hub's end of a pipe) closes, then sync what was moved and return.

        A wake-up line is a batch logged: the indexer gathers for GATHER_S so that each
        transaction moves many batches (index pages are written once per commit, not once per
        push). A line `!` is a reader waiting: it moves at once."""
        due: float | None = None  # when the gathered batches are moved
        while True:
            now = time.monotonic()
            timeout = RETRY_S if due is None else due - now  # without a wake-up it still looks each second
            if self.durable < self.moved:
                timeout = min(timeout, DURABLE_EVERY_S - (now - self.synced_at))
            readable, _, _ = select.select([wake], [], [], max(0.0, timeout))
            if readable:
                data = os.read(wake, 4096)
                if not data:
                    while self.move():
                        pass
                    self.synced_at = 0.0  # the last move syncs
                    self.move()
                    return
                now = time.monotonic()
                first = now if b"!" in data else now + GATHER_S
                due = first if due is None else min(due, first)
                if now < due:
                    continue
            due = None
            try:
                while self.move() == CHUNK:
                    pass
            except sqlite3.Error as exc:  # "database or disk is full": retry; the log keeps the batches
                self.out.write(f"error {' '.join(str(exc).split())}\n")
                self.out.flush()
                due = time.monotonic() + RETRY_S


class IndexerProcess:
    """The hub's handle on its indexer: starts it, wakes it, follows its progress, restarts it
    when it dies (the log keeps what it had not moved), stops it."""

    def __init__(self, store: Path, moved: int, on_durable: Callable[[int], None], max_pages: int = 0) -> None:
        self.store, self.max_pages = store, max_pages
        self.moved = self.durable = moved
        self.error: str | None = None
        self.errors = 0  # error lines so far: a reader waits for progress or a new error
        self.logged = moved  # the newest log id the hub said it committed (wake's `upto`)
        self._on_durable = on_durable
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        # A wake-up line written and not answered yet by a report. The indexer moves every row
        # logged by the time it moves, so further pushes meanwhile need not write one each (a
        # write and a flush on every commit); a report that leaves rows behind wakes it again.
        self._woken = False

    def _start(self) -> subprocess.Popen[bytes]:
        """(under the condition) The running process, started when there is none."""
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, "-m", "actors.hub.indexer", str(self.store),
                                           str(self.max_pages)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
            threading.Thread(target=self._follow, args=(self._proc,), name="store-indexer", daemon=True).start()
        return self._proc

    def wake(self, now: bool = False, upto: int = 0) -> None:
        """Batches were logged, up to log id `upto`: move them (`now`: a reader waits for them)."""
        with self._cond:
            self.logged = max(self.logged, upto)
            if self._closed or (self._woken and not now):
                return
            self._woken = True
            proc = self._start()
        self._write(proc, b"!\n" if now else b"\n")

    @staticmethod
    def _write(proc: subprocess.Popen[bytes], line: bytes) -> None:
        try:
            assert proc.stdin is not None
            proc.stdin.write(line)
            proc.stdin.flush()
        except (BrokenPipeError, ValueError):  # it died meanwhile: _follow restarts it
            pass

    def wait(self, target: int, timeout: float) -> bool:
        """Until every log row up to `target` is in samples (True), a move fails, or the timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            errors = self.errors
            while self.moved < target and self.errors == errors and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return self.moved >= target

    def _follow(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            kind, _, rest = raw.decode().strip().partition(" ")
            if kind == "moved":
                moved, durable = map(int, rest.split())
                with self._cond:
                    grew = durable > self.durable
                    self.moved, self.durable, self.error = moved, durable, None
                    # rows logged after its move began: wake it again (no push may come to do it)
                    self._woken = again = moved < self.logged and not self._closed
                    self._cond.notify_all()
                if again:
                    self._write(proc, b"\n")
                if grew:
                    try:
                        self._on_durable(durable)
                    except Exception:  # this thread must go on reading, or the indexer blocks on its pipe
                        log.exception("acting on the indexer's progress failed; the next report tries again")
            elif kind == "error":
                log.warning("moving logged batches into samples failed, retrying in %.0f s: %s", RETRY_S, rest)
                with self._cond:
                    self.error, self.errors = rest, self.errors + 1
                    self._woken = False  # it retries by itself; the next push may wake it sooner
                    self._cond.notify_all()
        code = proc.wait()
        with self._cond:
            if self._closed:
                return
            log.warning("the store's indexer exited (code %s); starting it again in %.0f s", code, RETRY_S)
            self.errors += 1
            self._cond.notify_all()
            self._cond.wait(RETRY_S)
            if not self._closed:
                self._woken = True
                self._write(self._start(), b"\n")

    def close(self, timeout: float = 30.0) -> None:
        """Stop the process after its last durable commit (killed if it takes longer than timeout)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            proc = self._proc
        if proc is None:
            return
        try:
            assert proc.stdin is not None
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the store's indexer did not stop within %.0f s; killed (the next start moves the rest)",
                        timeout)
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m actors.hub.indexer STORE [MAX_PAGES] (the hub's store starts it)", file=sys.stderr)
        return 2
    # The hub stops it by closing its stdin, after the hub's last push; a signal to the whole
    # group (systemd's stop, Ctrl-C in a terminal) must not cut a move short before that.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        Indexer(Path(args[0]), sys.stdout, int(args[1]) if len(args) == 2 else 0).run(sys.stdin.fileno())
    except BrokenPipeError:  # the hub is gone: what was moved is committed, the log keeps the rest
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
