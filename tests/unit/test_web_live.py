"""web/live.py: the dashboard's shared, background-refreshed update body."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from tests.clocks import ManualClock
from web.live import CPU_SHARE, LiveView, collector_paused


class Builder:
    """Counts builds; each returns a new text. `gate` (when set) holds a build until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate: threading.Event | None = None
        self.fail: Exception | None = None
        self.started = threading.Event()

    def __call__(self) -> str:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        return f'{{"build": {self.calls}}}'


def test_serves_one_build_while_fresh_and_rebuilds_when_stale():
    clock, build = ManualClock(100.0), Builder()
    live = LiveView(build, max_age=1.0, clock=clock, refresh=False)
    assert live.get() == '{"build": 1}'
    clock.t += 1.0
    assert live.get() == '{"build": 1}'  # exactly max_age old: still served
    clock.t += 0.01
    assert live.get() == '{"build": 2}'
    assert build.calls == live.builds == 2


def test_concurrent_requests_share_one_build():
    build = Builder()
    build.gate = threading.Event()
    live = LiveView(build, max_age=60.0, refresh=False)
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(live.get())) for _ in range(8)]
    for t in threads:
        t.start()
    assert build.started.wait(10)
    build.gate.set()
    for t in threads:
        t.join(10)
    assert got == ['{"build": 1}'] * 8
    assert build.calls == 1


def test_an_operator_change_forces_the_next_request_to_rebuild():
    clock, build = ManualClock(100.0), Builder()
    live = LiveView(build, max_age=60.0, clock=clock, refresh=False)
    assert live.get() == '{"build": 1}'
    live.changed()
    assert live.get() == '{"build": 2}'
    assert live.get() == '{"build": 2}'


def test_a_build_overtaken_by_a_change_is_not_served_afterwards():
    build = Builder()
    build.gate = threading.Event()
    live = LiveView(build, max_age=60.0, refresh=False)
    first: list[str] = []
    t = threading.Thread(target=lambda: first.append(live.get()))
    t.start()
    assert build.started.wait(10)
    live.changed()  # the operator acted while build 1 was running: build 1 may predate it
    build.gate.set()
    t.join(10)
    assert first == ['{"build": 1}']  # the request that started it still gets an answer
    assert live.get() == '{"build": 2}'  # but nobody is served it as fresh afterwards


def test_a_failing_build_reaches_the_request_and_the_next_one_retries():
    build = Builder()
    build.fail = RuntimeError("store is gone")
    live = LiveView(build, max_age=60.0, refresh=False)
    with pytest.raises(RuntimeError, match="store is gone"):
        live.get()
    build.fail = None
    assert live.get() == '{"build": 2}'


def test_the_refresher_keeps_the_body_fresh_while_watched_and_stops_when_nobody_is():
    build = Builder()
    live = LiveView(build, max_age=0.05, idle_after=0.3)
    live.get()
    deadline = time.monotonic() + 10
    while build.calls < 4 and time.monotonic() < deadline:  # rebuilt with no further requests
        time.sleep(0.01)
    assert build.calls >= 4
    refresher = live._refresher
    assert refresher is not None
    refresher.join(10)  # nobody asked for idle_after: it stops by itself
    assert not refresher.is_alive()
    calls = build.calls
    time.sleep(0.2)
    assert build.calls == calls
    live.get()  # a new viewer starts it again
    assert live._refresher is not None and live._refresher.is_alive()
    live.close()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        LiveView(Builder(), max_age=-1)
    with pytest.raises(ValueError):
        LiveView(Builder(), idle_after=0)


def test_a_rebuild_under_way_does_not_hold_requests_while_the_last_body_is_recent():
    clock, build = ManualClock(100.0), Builder()
    live = LiveView(build, max_age=1.0, clock=clock, refresh=False)
    assert live.get() == '{"build": 1}'
    build.gate = threading.Event()
    build.started.clear()
    clock.t += 1.5
    slow = threading.Thread(target=live.get)  # finds the body stale and starts build 2
    slow.start()
    assert build.started.wait(10)
    assert live.get() == '{"build": 1}'  # 1.5 s old, within twice max_age: served at once
    clock.t += 1.0  # 2.5 s old: too old to serve; this request waits for build 2
    waiter: list[str] = []
    t = threading.Thread(target=lambda: waiter.append(live.get()))
    t.start()
    t.join(0.2)
    assert t.is_alive() and not waiter
    build.gate.set()
    t.join(10)
    slow.join(10)
    assert waiter == ['{"build": 2}']


def test_an_expensive_build_is_repeated_less_often_so_watching_stays_within_its_cpu_share():
    clock, cpu, build = ManualClock(100.0), ManualClock(0.0), Builder()

    def costly() -> str:
        cpu.advance(0.5)  # a thousand-node fleet: half a second of CPU per build
        return build()

    live = LiveView(costly, max_age=1.0, clock=clock, refresh=False, cpu_clock=cpu)
    assert live.get() == '{"build": 1}'
    assert live.interval == pytest.approx(0.5 / CPU_SHARE)  # its share of a core, at most
    clock.t += 0.5 / CPU_SHARE - 0.1
    assert live.get() == '{"build": 1}'
    clock.t += 0.2
    assert live.get() == '{"build": 2}'
    cpu.t = 0.0

    def cheap() -> str:
        cpu.advance(0.01)
        return build()

    live._build = cheap
    clock.t += 0.5 / CPU_SHARE + 0.1
    assert live.get() == '{"build": 3}'
    assert live.interval == 1.0  # a cheap build again: back to max_age


def test_the_body_is_encoded_once_per_build_however_many_ask():
    clock, build = ManualClock(100.0), Builder()
    live = LiveView(lambda: build() + " é", max_age=1.0, clock=clock, refresh=False)
    first = live.get_bytes()
    assert first == '{"build": 1} é'.encode() and live.get_bytes() is first
    clock.t += 1.5
    assert live.get_bytes() == '{"build": 2} é'.encode()


def test_the_collector_is_held_off_while_a_build_runs_and_resumes_after_it_even_a_failed_one():
    seen: list[bool] = []

    def build() -> str:
        seen.append(gc.isenabled())
        if len(seen) == 2:
            raise RuntimeError("broken build")
        return "{}"

    clock = ManualClock(100.0)
    live = LiveView(build, max_age=1.0, clock=clock, refresh=False)
    assert gc.isenabled()
    live.get()
    assert gc.isenabled()
    clock.t += 2
    with pytest.raises(RuntimeError):
        live.get()
    assert seen == [False, False] and gc.isenabled()


def test_the_collector_resumes_when_the_last_of_overlapping_pauses_ends():
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with collector_paused():
            inside.set()
            assert leave.wait(10)

    other = threading.Thread(target=hold)
    other.start()
    try:
        assert inside.wait(10)
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the other thread's pause still holds
    finally:
        leave.set()
        other.join(10)
    assert gc.isenabled()


def test_a_collector_switched_off_before_stays_off():
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_request_just_before_the_refresher_starts_its_rebuild_does_not_build_itself():
    """The refresher wakes as the body turns stale; on a busy hub it gets the GIL a little later.
    A request in between built the whole update itself (0.3-0.8 s for a thousand nodes)."""
    clock, build = ManualClock(100.0), Builder()
    live = LiveView(build, max_age=1.0, clock=clock)  # with its refresher
    try:
        live.get()  # the first body (the refresher, just started, may build one too)
        deadline = time.monotonic() + 10
        while live._building:  # until no build is under way: the clock stands still, none is due
            assert time.monotonic() < deadline, "a build never ended"
            time.sleep(0.01)
        body, calls = live.get(), build.calls
        build.gate = threading.Event()  # any build from now on holds until released
        clock.t += 1.5  # stale, within twice the interval; the refresher notices within a second
        assert live.get() == body  # served at once, whether or not the refresher began its build
        assert build.calls <= calls + 1  # the refresher's, if any: never this request's
        build.gate.set()
    finally:
        live.close()
