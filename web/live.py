"""The dashboard's live update, built once per interval however many pages poll it.

Building the page's update costs time in proportion to the fleet (every card of every node:
about 25 ms for 200 nodes x 10 sensors on an idle x86-64 hub, several times that while the
hub ingests), and every open page asks for it every 2 s. So the JSON body is built by one
thread and served to every viewer until it is `max_age` old; while anyone is watching, a
refresher rebuilds it in the background so that a request almost never waits for a build.
While the refresher runs, a request never waits for a rebuild (under way or about to start)
while the last body is at most twice `max_age` old, so a slow build (a busy hub) delays
freshness, not the page. A page therefore sees values at most twice `max_age` old, the same
for every viewer. An operator's own command calls `changed()`, so its effect shows on the
next poll.
Nobody watching for `idle_after` seconds: the refresher stops and the hub does no work.

A large fleet makes the build itself expensive (every row of every card). The interval is
therefore at least the build's own CPU time divided by CPU_SHARE: watching the dashboard never
takes more than about a twentieth of the hub's core from ingest, and a thousand-node page
(about 135 ms of CPU a build) refreshes every 2-3 s instead of every second.

A build allocates tens of thousands of objects at once (cards, rows, pieces of JSON) that
all die when it ends, and that burst is what set the garbage collector off: each
young-generation collection then walked the build's live objects while every thread of the
hub waited. Automatic collection is held off while a build runs (`collector_paused`); the
build's objects hold no cycles, so reference counting frees them as it ends, and the collector
runs far less often (README, "Where a fleet hub's time goes").
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)
CPU_SHARE = 0.05  # of one core, at most, for rebuilding the body while people watch
_pause_lock = threading.Lock()
_pausing = 0  # builds under way that hold the collector off (several LiveViews may build at once)
_resume = False  # whether the collector was on when the first of them began


@contextmanager
def collector_paused() -> Iterator[None]:
    """Automatic garbage collection held off for the block, in any number of threads at once;
    it resumes when the last of them ends, unless it was off before the first began."""
    global _pausing, _resume
    with _pause_lock:
        if _pausing == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pausing += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pausing -= 1
            if _pausing == 0 and _resume:
                gc.enable()


class LiveView:
    """A cached, single-flight, background-refreshed text built by `build`."""

    def __init__(self, build: Callable[[], str], max_age: float = 1.0, idle_after: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, refresh: bool = True,
                 cpu_clock: Callable[[], float] = time.thread_time) -> None:
        if max_age < 0 or idle_after <= 0:
            raise ValueError(f"max_age must be >= 0 and idle_after > 0, got {max_age}, {idle_after}")
        self._build, self.max_age, self.idle_after, self._clock = build, max_age, idle_after, clock
        self._cpu_clock = cpu_clock
        self.interval = max_age  # max_age, or longer when a build costs more than CPU_SHARE of it
        self._cond = threading.Condition()
        self._text: str | None = None
        self._bytes: tuple[str, bytes] | None = None  # the text last asked for as bytes, and them
        self._built_at = float("-inf")
        self._generation = 0  # bumped by changed(): a build started before it is already stale
        self._building = False
        self._last_request = float("-inf")
        self._refresher: threading.Thread | None = None
        self._refresh = refresh  # False: requests alone rebuild (tests of the cache rules)
        self._closed = False
        self.builds = 0

    def get(self) -> str:
        """The current text: cached while fresh, otherwise built by this call (or the one already building)."""
        with self._cond:
            self._last_request = self._clock()
            self._start_refresher()
            while True:
                age = self._clock() - self._built_at
                if self._text is not None and age <= self.interval:
                    return self._text
                if self._text is not None and age <= 2 * self.interval \
                        and (self._building or self._refresher is not None):
                    # a rebuild is under way, or the refresher is about to start it (it wakes as
                    # the body turns stale, and on a busy hub gets the GIL a little later): the
                    # last body, at most twice the interval old. A request that came in between
                    # would otherwise build the whole update itself (0.2-0.8 s for 1000 nodes).
                    return self._text
                if not self._building:
                    break
                self._cond.wait(5.0)  # nothing recent enough: share the result of the build under way
        return self._rebuild(raise_errors=True)

    def get_bytes(self) -> bytes:
        """get(), encoded as UTF-8 once per build however many pages ask."""
        text = self.get()
        cached = self._bytes
        if cached is None or cached[0] is not text:
            cached = self._bytes = (text, text.encode())
        return cached[1]

    def changed(self) -> None:
        """Something the page shows changed at the operator's hand: the next request rebuilds."""
        with self._cond:
            self._generation += 1
            self._built_at = float("-inf")

    def close(self) -> None:
        """Stop the refresher (it exits within one interval)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _rebuild(self, raise_errors: bool) -> str | None:
        with self._cond:
            self._building = True
            generation = self._generation
        try:
            started, cpu = self._clock(), self._cpu_clock()
            with collector_paused():
                text = self._build()
            cpu = self._cpu_clock() - cpu
        except Exception:
            with self._cond:
                self._building = False
                self._cond.notify_all()
            if raise_errors:
                raise
            log.exception("dashboard refresh failed; the next request builds it and reports the error")
            return None
        with self._cond:
            self._building = False
            self.builds += 1
            self.interval = max(self.max_age, cpu / CPU_SHARE)
            if generation == self._generation:  # not overtaken by changed() while building
                self._text, self._built_at = text, started
            self._cond.notify_all()
        return text

    def _start_refresher(self) -> None:
        if self.max_age <= 0 or not self._refresh or self._closed or (self._refresher is not None and self._refresher.is_alive()):
            return
        self._refresher = threading.Thread(target=self._refresh_loop, name="dashboard-refresh", daemon=True)
        self._refresher.start()

    def _refresh_loop(self) -> None:
        while True:
            with self._cond:
                # rebuild as the cached text turns stale; requests meanwhile get it (see get)
                due = self._built_at + self.interval
                while not self._closed and self._clock() < due:
                    self._cond.wait(max(0.01, due - self._clock()))
                    due = self._built_at + self.interval
                if self._closed or self._clock() - self._last_request > self.idle_after:
                    self._refresher = None
                    return
                if self._building:
                    self._cond.wait(5.0)
                    continue
            if self._rebuild(raise_errors=False) is None:
                with self._cond:  # a failing build is retried once per interval, not in a tight loop
                    self._cond.wait(max(self.max_age, 0.1))
