"""The dashboard's state poller: how often it asks a fleet's nodes."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from tests.helpers import wait_for
from web.polling import MAX_CALLS_PER_S, StatePoller


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingUpstream:
    """Answers every call at once, counting them."""

    poll_timeout = 1.0

    def __init__(self) -> None:
        self.calls = 0

    def submit(self, node: str, actor: str, method: str, *args: Any, **kwargs: Any) -> Future:
        self.calls += 1
        done: Future = Future()
        done.set_result(f"{node} {actor}.{method}")
        return done

    def result(self, future: Future, node: str, actor: str, poll: bool = False) -> tuple[Any, float]:
        return future.result(), 0.001


def test_a_small_fleet_is_asked_once_per_ttl():
    upstream, clock = CountingUpstream(), Clock()
    poller = StatePoller(upstream, "leds", "state", ttl=1.0, clock=clock)
    nodes = [f"n{i}" for i in range(10)]
    assert poller.get(nodes)["n3"]["value"] == "n3 leds.state"
    assert upstream.calls == 10
    clock.now += 0.5
    poller.get(nodes)
    assert upstream.calls == 10  # fresh enough
    clock.now += 0.6
    poller.get(nodes)
    wait_for(lambda: upstream.calls == 20, what="the second refresh")


def test_a_large_fleet_is_asked_at_a_bounded_rate():
    upstream, clock = CountingUpstream(), Clock()
    poller = StatePoller(upstream, "leds", "state", ttl=1.0, clock=clock)
    nodes = [f"n{i}" for i in range(1000)]
    poller.get(nodes)
    assert upstream.calls == 1000
    spacing = 1000 / MAX_CALLS_PER_S  # 5 s at 200 calls a second
    for _ in range(10):  # a page asking every second sees the cached states meanwhile
        clock.now += spacing / 10
        assert len(poller.get(nodes)) == 1000
    # one more refresh, when the spacing had passed (in its own thread: a page waits for it only briefly)
    wait_for(lambda: upstream.calls == 2000 and not poller._refreshing, what="the second refresh")
    clock.now += spacing * 0.9
    poller.get(nodes)
    assert upstream.calls == 2000
