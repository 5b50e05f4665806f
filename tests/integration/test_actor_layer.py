"""The actor layer on a real name server: repopulation, dead-node cleanup, Busy, supervision."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest
from Pyro5.api import Daemon, Proxy

from actors.base import Actor, CallGate, remote
from actors.client import connect, get_actor
from actors.errors import ActorUnavailable, Busy, UnknownActor
from tests.cluster.conftest import ProcNode
from tests.helpers import HOST, free_port, wait_for, write_node_config

SENSORS = [{"name": "dht22", "kind": "dht22", "interval": 0.5}]


def start_nameserver(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "actors.cli", "nameserver", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: connect(HOST, port).names() is not None, timeout=20, what="name server up")
    return proc


def test_actor_layer_restarted_nameserver_is_repopulated(cluster_factory):
    ns_port = free_port()
    ns = start_nameserver(ns_port)
    try:
        c = cluster_factory(ns_port, embedded=False)
        c.start_node("pi4", sensors=SENSORS, leds=True)
        fleet = connect(HOST, ns_port)
        wait_for(lambda: "harvester.pi4.leds" in fleet.names(), what="pi4 registered")
        ns.send_signal(signal.SIGKILL)
        ns.wait(10)
        ns = start_nameserver(ns_port)
        assert "harvester.pi4.leds" not in fleet.names()  # memory storage: it forgot everything
        restarted = time.monotonic()
        wait_for(lambda: {"harvester.pi4.leds", "harvester.hub.aggregator"} <= set(fleet.names()), timeout=10,
                 interval=0.2, what="names re-registered by the nodes' sweeps")
        print(f"repopulated in {time.monotonic() - restarted:.1f}s")
        assert fleet["pi4"]["dht22"].read()
    finally:
        ns.kill()
        ns.wait(10)


def test_actor_layer_killed_node_is_marked_dead_then_cleaned(cluster, tmp_path):
    cfg = write_node_config(tmp_path / "pi4.toml", "pi4", "spoke", cluster.ns_port, sensors=SENSORS)
    node = ProcNode("pi4", cfg).start()
    try:
        fleet = connect(HOST, cluster.ns_port)
        wait_for(lambda: (n := cluster.node_snapshot("pi4")) and n["online"], what="pi4 online")
        node.kill(signal.SIGKILL)
        ls = subprocess.run([sys.executable, "-m", "actors.cli", "ls", "--node", "pi4", "--ns",
                             f"{HOST}:{cluster.ns_port}"], capture_output=True, text=True, timeout=60)
        assert "harvester.pi4.dht22" in ls.stdout and "dead" in ls.stdout and "live" not in ls.stdout
        wait_for(lambda: not cluster.node_snapshot("pi4")["online"], timeout=10, what="hub marks pi4 offline")
        wait_for(lambda: not any(n.startswith("harvester.pi4.") for n in fleet.names()), timeout=30,
                 interval=0.5, what="autoclean removes the dead node's names")
    finally:
        node.kill()


class SlowActor(Actor):
    """Answers after a delay given per call."""

    kind = "test"

    @remote
    def work(self, seconds: float) -> str:
        time.sleep(seconds)
        return "done"


def test_actor_layer_slow_actor_answers_busy_instead_of_piling_threads():
    actor = SlowActor("lab", "slow", gate=CallGate(concurrency=1, max_waiting=2, wait=5.0))
    daemon = Daemon(host=HOST, port=0)
    uri = daemon.register(actor, objectId="slow")
    threading.Thread(target=daemon.requestLoop, daemon=True).start()
    results: list[str] = []
    lock = threading.Lock()
    release = threading.Event()

    def call() -> None:
        with Proxy(uri) as p:
            p._pyroTimeout = 30
            try:
                out = p.work(1.0 if not release.is_set() else 0.0)
            except Busy as exc:
                out = f"busy: {exc}"
        with lock:
            results.append(out)

    try:
        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        busy = [r for r in results if r.startswith("busy")]
        assert results.count("done") == 3  # one running + two queued behind it
        assert len(busy) == 5 and "1 call(s) running and 2 waiting" in busy[0]
        assert actor.health()["busy_rejections"] == 5
    finally:
        daemon.shutdown()


def test_actor_layer_broken_device_is_unavailable_and_the_agent_lives(cluster):
    # no chip answers at 0x76 on the emulated bus: construction fails, readings say why
    agent = cluster.start_node("pi4", sensors=[*SENSORS, {"name": "bme680", "kind": "bme680", "interval": 0.5,
                                                          "address": 0x76}])
    fleet = connect(HOST, cluster.ns_port)
    readings = wait_for(lambda: fleet["pi4"]["bme680"].latest(), what="a bme680 poll")
    assert all(r["value"] is None and r["quality"] == "unavailable" for r in readings)
    assert "121" in readings[0]["reason"] or "EREMOTEIO" in readings[0]["reason"] or "chip" in readings[0]["reason"]
    assert fleet["pi4"]["bme680"].health()["state"] == "unavailable"
    assert fleet["pi4"]["dht22"].read()[0]["value"] is not None  # the rest of the node works
    wait_for(lambda: cluster.node_snapshot("pi4")["actors"].get("bme680", {}).get("state") == "unavailable",
             what="the hub sees the actor's health")
    assert agent.daemon is not None


def test_actor_layer_get_actor_waits_for_a_late_node(cluster):
    found: list = []
    waiter = threading.Thread(target=lambda: found.append(
        get_actor("harvester.late.dht22", timeout=30, host=HOST, port=cluster.ns_port)))
    waiter.start()
    cluster.start_node("late", sensors=SENSORS)
    waiter.join(40)
    assert found and found[0].read()[0]["node"] == "late"
    with pytest.raises(UnknownActor, match="did not answer within 0.5s"):
        get_actor("harvester.nobody.dht22", timeout=0.5, host=HOST, port=cluster.ns_port)


def test_actor_layer_unavailable_actuator_raises_typed_error(cluster, monkeypatch):
    agent = cluster.start_node("pi4", sensors=SENSORS, leds=True)
    leds = next(a for a in agent.actors if a.name == "leds")
    leds.slot.failed(OSError(5, "strip unplugged"))
    with pytest.raises(ActorUnavailable, match="strip unplugged"):
        connect(HOST, cluster.ns_port)["pi4"]["leds"].state()


def test_actor_layer_command_after_a_long_idle_reconnects_first(cluster, monkeypatch):
    import actors.client as client

    cluster.start_node("pi4", sensors=SENSORS, buzzer=True)
    buzzer = connect(HOST, cluster.ns_port)["pi4"]["buzzer"]
    assert buzzer.state()["muted"] in (True, False)
    proxy = buzzer._local.proxy
    # as if the REPL sat idle past the reconnect limit: the daemon would have closed it by now
    monkeypatch.setattr(client, "IDLE_RECONNECT_S", 0.0)
    assert buzzer.beep(1, 50)["last_command"]["command"] == "beep"
    assert buzzer._local.proxy is not proxy
