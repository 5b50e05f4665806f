"""The dashboard's state poller: how often it asks a fleet's nodes."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future
from typing import Any

from actors.hub.state import Hub
from actors.hub.store import Store
from tests.helpers import wait_for
from web.dashboard import Dashboard
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


class HeldUpstream:
    """Answers every call only once `release` is set. Its poll timeout is a minute: a call that
    waited for it would hold the test far past the bounds below."""

    poll_timeout = 60.0
    available = True

    def __init__(self) -> None:
        self.release = threading.Event()

    def submit(self, node: str, actor: str, method: str, *args: Any, **kwargs: Any) -> Future:
        answer: Future = Future()

        def answer_when_released() -> None:
            if self.release.wait(30):
                answer.set_result({"pixels": [[255, 0, 0]] * 11, "brightness": 0.5})

        threading.Thread(target=answer_when_released, daemon=True).start()
        return answer

    def result(self, future: Future, node: str, actor: str, poll: bool = False) -> tuple[Any, float]:
        return future.result(timeout=30), 0.001


def in_thread(call: Any) -> Any:
    """call() on a thread of its own, which must end within 10 s; its result."""
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(call()), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "the call waited for the nodes' first answers"
    return out[0]


def test_a_first_call_waits_for_first_answers_unless_told_not_to():
    upstream = HeldUpstream()
    patient, impatient = (StatePoller(upstream, "leds", "state") for _ in range(2))
    assert in_thread(lambda: impatient.get(["n1", "n2"], patient=False)) == {}
    waiting = threading.Thread(target=lambda: patient.get(["n1", "n2"]), daemon=True)
    waiting.start()
    upstream.release.set()  # the patient call was waiting for these answers: it returns with them
    waiting.join(10)
    assert not waiting.is_alive()
    assert patient.get(["n1", "n2"]).keys() == {"n1", "n2"}
    wait_for(lambda: impatient.get(["n1", "n2"], patient=False).keys() == {"n1", "n2"},
             what="the refresh the impatient call started")


def test_the_dashboard_waits_for_first_answers_only_in_its_first_build(tmp_path):
    hub = Hub(Store(tmp_path / "hub.sqlite3"))
    hub.hello({"node": "sim", "push_interval": 60.0, "boot": "b"})
    hub.push([{"node": "sim", "seq": 1, "readings": [
        {"sensor": "dht22", "quantity": "temperature", "unit": "°C", "value": 21.0, "ts": time.time()}]}])
    upstream = HeldUpstream()
    dash = Dashboard(hub, upstream)  # type: ignore[arg-type]
    try:
        assert json.loads(in_thread(dash.live.get))["leds"] == {}  # no strip known yet: nothing to wait for
        # the hub's probe finds the node's LED strip; the next build must not wait for its first state
        hub.set_reachable("sim", True, {"harvester.sim.leds": {"state": "ok"}})
        dash.live.changed()
        assert json.loads(in_thread(dash.live.get))["leds"]["sim"]["text"] == "unknown: no answer yet"
        upstream.release.set()

        def shown() -> str:
            dash.live.changed()
            return json.loads(dash.live.get())["leds"]["sim"]["text"]

        wait_for(lambda: shown() == "11 of 11 lit · brightness 50 %", what="the strip's state on the page")
    finally:
        dash.live.close()
        hub.store.close()
