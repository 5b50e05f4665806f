"""Liveness from what spokes send: a boot id in hello tells a restart from a pause, the hub
probes only quiet nodes (and each node's health now and then), and a spoke keeps its
connection to the hub between pushes."""

from __future__ import annotations

import pytest
from Pyro5 import errors as pyro_errors

import actors.hub.prober as prober_mod
import actors.spoke.pusher as pusher_mod
from actors.hub.prober import HEALTH_INTERVAL, NAMELESS_RECHECK, SpokeProber
from actors.hub.state import Hub
from actors.hub.store import Store
from actors.spoke.outbox import Outbox
from actors.spoke.pusher import Pusher
from hal.readings import Reading
from tests.clocks import ManualClock

T0 = 1_700_000_000.0


@pytest.fixture
def hub(tmp_path):
    h = Hub(Store(tmp_path / "hub.sqlite3"), clock=ManualClock(T0))
    yield h
    h.store.close()


def node(hub, name="pi4"):
    return next(n for n in hub.snapshot()["nodes"] if n["name"] == name)


def test_a_new_boot_id_in_hello_is_a_restart_however_soon_it_comes(hub):
    hub.hello({"node": "pi4", "push_interval": 5.0, "boot": "aaaa"})
    hub.set_reachable("pi4", True, {"harvester.pi4.dht22": {"state": "ok"}})
    hub._clock.advance(1.0)
    hub.hello({"node": "pi4", "push_interval": 5.0, "boot": "aaaa"})  # the same run: a heartbeat
    assert node(hub)["restarts"] == 0 and node(hub)["reachable"] is True
    hub._clock.advance(0.5)  # back within a second: it never went quiet
    hub.hello({"node": "pi4", "push_interval": 5.0, "boot": "bbbb"})
    n = node(hub)
    assert n["restarts"] == 1 and n["restarted_at"] == T0 + 1.5 and n["boot"] == "bbbb"
    assert n["reachable"] is None  # the new agent is probed afresh
    assert n["online"]


def test_a_first_hello_or_one_without_a_boot_id_is_no_restart(hub):
    hub.hello({"node": "pi4"})
    hub.hello({"node": "pi4", "boot": "aaaa"})  # an older node upgraded: nothing to compare with
    assert node(hub)["restarts"] == 0


class FakeProbeProxy:
    """Stands in for the agent's proxy: records calls, answers or fails as its node is set."""

    answers: dict[str, object] = {}
    calls: list[str] = []

    def __init__(self, uri: str) -> None:
        self.node = uri.split(".")[1]

    def _pyroClaimOwnership(self) -> None:  # noqa: N802 (Pyro5's name)
        pass

    def _pyroRelease(self) -> None:  # noqa: N802
        pass

    def fleet_health(self):
        FakeProbeProxy.calls.append(self.node)
        answer = self.answers.get(self.node, {})
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def prober(hub, monkeypatch):
    FakeProbeProxy.answers, FakeProbeProxy.calls = {}, []
    monkeypatch.setattr(prober_mod, "Proxy", FakeProbeProxy)
    now = [1000.0]
    monkeypatch.setattr(prober_mod.time, "monotonic", lambda: now[0])
    p = SpokeProber(hub, "127.0.0.1", 9)
    p.now = now
    yield p
    p.close()


def test_pushing_nodes_are_probed_once_then_only_for_their_health(hub, prober):
    for name in ("pi4", "pizero"):
        hub.hello({"node": name, "push_interval": 5.0, "boot": "b1"})
    prober.run()
    assert sorted(FakeProbeProxy.calls) == ["pi4", "pizero"]  # first seen: their actors and outbox
    for _ in range(5):  # they keep pushing: no probe at all
        hub._clock.advance(2.0)
        prober.now[0] += 2.0
        for name in ("pi4", "pizero"):
            hub.hello({"node": name, "push_interval": 5.0, "boot": "b1"})
        prober.run()
    assert len(FakeProbeProxy.calls) == 2
    prober.now[0] += HEALTH_INTERVAL
    prober.run()  # their health, every HEALTH_INTERVAL
    assert len(FakeProbeProxy.calls) == 4


def test_a_quiet_node_is_probed_every_run_and_shown_offline_when_refused(hub, prober):
    hub.hello({"node": "pi4", "push_interval": 5.0, "boot": "b1"})
    prober.run()
    hub._clock.advance(5.0)  # one push interval without a word: not quiet yet
    prober.run()
    assert FakeProbeProxy.calls == ["pi4"]
    hub._clock.advance(3.0)  # 8 s > 1.5 push intervals: quiet, so asked
    prober.run()
    assert FakeProbeProxy.calls == ["pi4", "pi4"] and node(hub)["online"]  # it answers: alive, just slow
    FakeProbeProxy.answers["pi4"] = pyro_errors.CommunicationError("connection refused")
    prober.run()
    assert node(hub)["reachable"] is False and not node(hub)["online"]  # offline at once, not after 15 s
    prober.run()
    assert FakeProbeProxy.calls.count("pi4") == 4  # refused: asked every run until it answers


def test_a_restart_is_probed_at_once(hub, prober):
    hub.hello({"node": "pi4", "push_interval": 5.0, "boot": "b1"})
    prober.run()
    hub._clock.advance(1.0)
    hub.hello({"node": "pi4", "push_interval": 5.0, "boot": "b2"})
    prober.run()
    assert FakeProbeProxy.calls == ["pi4", "pi4"] and node(hub)["reachable"] is True


def test_a_sender_without_an_agent_is_not_looked_up_while_it_pushes(hub, prober):
    FakeProbeProxy.answers["http1"] = pyro_errors.NamingError("unknown name: harvester.http1.agent")
    hub.hello({"node": "http1", "push_interval": 5.0})
    for _ in range(10):
        prober.run()
        hub._clock.advance(1.0)
        prober.now[0] += 1.0
        hub.hello({"node": "http1", "push_interval": 5.0})
    assert FakeProbeProxy.calls == ["http1"]
    hub._clock.advance(10.0)  # quiet now: looked up, but only every NAMELESS_RECHECK
    prober.run()
    assert FakeProbeProxy.calls == ["http1"]
    prober.now[0] += NAMELESS_RECHECK
    prober.run()
    assert FakeProbeProxy.calls == ["http1", "http1"]
    assert node(hub, "http1")["reachable"] is None  # push-based liveness: never marked unreachable


class FakeAggProxy:
    """The hub's aggregator as the pusher sees it: counts connections, can drop one."""

    made = 0

    def __init__(self, uri: str) -> None:
        FakeAggProxy.made += 1
        self.closed_by_hub = False
        self.released = False
        self.pushes = 0

    def _pyroClaimOwnership(self) -> None:  # noqa: N802
        pass

    def _pyroRelease(self) -> None:  # noqa: N802
        self.released = True

    def hello(self, info, sent_at):
        if self.closed_by_hub:
            raise pyro_errors.ConnectionClosedError("receiving: not enough data")
        return {"last_seq": 0}

    def push(self, batches, sent_at):
        if self.closed_by_hub:
            raise pyro_errors.ConnectionClosedError("receiving: not enough data")
        self.pushes += 1
        return {"acked": [b["seq"] for b in batches], "duplicates": 0, "hello": []}


def test_the_spoke_keeps_its_connection_and_reconnects_when_the_hub_closed_it(tmp_path, monkeypatch):
    FakeAggProxy.made = 0
    monkeypatch.setattr(pusher_mod, "Proxy", FakeAggProxy)
    box = Outbox(tmp_path / "o.sqlite3", "sp1")
    try:
        pusher = Pusher("sp1", box, [("127.0.0.1", 9)], None, 50, lambda: {"node": "sp1"})
        pusher.links[0].agg_uri = "PYRO:agg@127.0.0.1:9"
        for i in range(5):
            box.append([Reading.measured("sp1", "dht22", "temperature", 21.0, T0 + i)])
            assert pusher.push_once() == 1
        assert FakeAggProxy.made == 1  # five runs, one connection
        first = pusher.links[0].proxy
        first.closed_by_hub = True  # reaped after a minute idle, or the hub restarted
        box.append([Reading.measured("sp1", "dht22", "temperature", 21.0, T0 + 9)])
        assert pusher.push_once() == 1  # the same run, on a new connection
        assert FakeAggProxy.made == 2 and first.released
        pusher.close()
        assert pusher.links[0].proxy is None
    finally:
        box.close()


def test_a_hub_that_times_out_is_not_asked_twice_in_one_run(tmp_path, monkeypatch):
    calls = []

    class Hanging(FakeAggProxy):
        def hello(self, info, sent_at):
            calls.append("hello")
            raise pyro_errors.TimeoutError("receiving: timeout")

    monkeypatch.setattr(pusher_mod, "Proxy", Hanging)
    box = Outbox(tmp_path / "o.sqlite3", "sp1")
    try:
        pusher = Pusher("sp1", box, [("127.0.0.1", 9)], None, 50, lambda: {"node": "sp1"})
        pusher.links[0].agg_uri = "PYRO:agg@127.0.0.1:9"
        box.append([Reading.measured("sp1", "dht22", "temperature", 21.0, T0)])
        assert pusher.push_once() == 0
        pusher.links[0].proxy = Hanging("x")  # a kept connection to a hub that hangs
        assert pusher.push_once() == 0
        assert calls == ["hello", "hello"] and box.stats()["pending_batches"] == 1
    finally:
        box.close()
