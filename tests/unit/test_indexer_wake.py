"""actors/hub/indexer.IndexerProcess: how often the hub writes a wake-up line to its indexer.

The indexer moves every row logged by the time it moves, so one line stands for all the pushes
committed until it reports; a report that leaves rows behind is answered with a new line at
once, so no row waits for a later push (or the indexer's once-a-second look)."""

from __future__ import annotations

import io
import queue
import threading

import pytest

from actors.hub.indexer import IndexerProcess


class FakeIndexer:
    """The indexer's process as the hub sees it: the lines written to it, the reports it prints."""

    def __init__(self) -> None:
        self.stdin = io.BytesIO()
        self._reports: queue.Queue[bytes | None] = queue.Queue()
        self._taken = threading.Semaphore(0)
        self.stdout = self._read()

    def _read(self):
        for line in iter(self._reports.get, None):
            yield line
            self._taken.release()  # the reader asks for the next line: it has acted on this one

    def report(self, line: str) -> None:
        """Print one report and wait until the hub's reader has acted on it."""
        self._reports.put(line.encode() + b"\n")
        assert self._taken.acquire(timeout=10)

    def end(self) -> None:
        self._reports.put(None)

    def lines(self) -> list[bytes]:
        written = self.stdin.getvalue().splitlines()
        self.stdin.seek(0)
        self.stdin.truncate()
        return written

    def poll(self) -> None:
        return None

    def wait(self) -> int:
        return 0


@pytest.fixture
def indexer(tmp_path):
    """An IndexerProcess on a fake process, its reports read by the hub's own reader thread."""
    proc = FakeIndexer()
    ip = IndexerProcess(tmp_path / "hub.sqlite3", moved=0, on_durable=lambda durable: None)
    ip._start = lambda: proc  # type: ignore[method-assign]
    reader = threading.Thread(target=ip._follow, args=(proc,), daemon=True)
    reader.start()
    yield ip, proc
    ip._closed = True  # (so that the reader does not start a process again when the output ends)
    proc.end()
    reader.join(10)


def test_one_wake_up_line_stands_for_every_push_until_the_indexer_reports(indexer):
    ip, proc = indexer
    for upto in range(1, 51):  # fifty pushes, each a log row, while the indexer gathers
        ip.wake(upto=upto)
    assert proc.lines() == [b""]
    proc.report("moved 50 0")  # it moved them all: nothing to wake it for
    assert proc.lines() == [] and ip.moved == 50
    ip.wake(upto=51)  # the next push wakes it again
    assert proc.lines() == [b""]


def test_a_report_that_leaves_rows_behind_wakes_the_indexer_at_once(indexer):
    ip, proc = indexer
    ip.wake(upto=1)
    ip.wake(upto=2)  # committed after the indexer's move began: not in its report
    assert proc.lines() == [b""]
    proc.report("moved 1 0")
    assert proc.lines() == [b""]  # woken for row 2 without waiting for another push
    proc.report("moved 2 2")
    assert proc.lines() == []


def test_a_waiting_reader_always_gets_its_line_and_a_failed_move_lets_the_next_push_wake_it(indexer):
    ip, proc = indexer
    ip.wake(upto=1)
    ip.wake(now=True, upto=1)  # a query waits for the rows: move at once, gathering or not
    assert proc.lines() == [b"", b"!"]
    proc.report("error database or disk is full")
    ip.wake(upto=2)
    assert proc.lines() == [b""] and ip.errors == 1
