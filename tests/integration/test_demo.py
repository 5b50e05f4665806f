"""`harvester demo` end to end: three node processes, supervision, clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from actors.client import connect
from tests.helpers import HOST, free_port, wait_for


def readings(port: int) -> dict[str, dict]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/api/readings", timeout=5) as res:
        return {n["name"]: n for n in json.load(res)["nodes"]}


def fresh(node: dict, sensor: str, quantity: str, now: float) -> bool:
    r = node["sensors"].get(sensor, {}).get(quantity)
    return bool(r) and r["value"] is not None and not r["stale"] and now - r["ts"] < 15


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def demo(tmp_path):
    web, ns = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "actors.cli", "demo", "--port", str(web), "--ns-port", str(ns),
                             "--state-dir", str(tmp_path / "state")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc, web, ns
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_demo_brings_three_nodes_online_restarts_a_killed_spoke_and_stops_cleanly(demo):
    proc, web, ns = demo

    def all_online():
        nodes, now = readings(web), time.time()
        return (set(nodes) == {"hub", "pi4", "pizero"} and all(n["online"] for n in nodes.values())
                and fresh(nodes["pi4"], "dht22", "temperature", now)
                and fresh(nodes["pi4"], "bme680", "iaq", now)
                and fresh(nodes["pizero"], "bme680", "pressure", now)
                and fresh(nodes["pizero"], "network-hub", "rtt", now)
                and fresh(nodes["hub"], "monitor", "memory_used", now))

    wait_for(all_online, timeout=30, interval=0.5, what="three nodes online with fresh readings")
    nodes = readings(web)
    assert (nodes["pizero"]["role"], nodes["pizero"]["profile"]) == ("spoke", "native")
    assert (nodes["hub"]["role"], nodes["pi4"]["profile"]) == ("hub", "wasm")

    fleet = connect(HOST, ns)
    assert fleet["pizero"]["agent"].info()["wasmtime_loaded"] is False
    pids = {n: fleet[n]["agent"].info()["pid"] for n in ("hub", "pi4", "pizero")}

    boot = readings(web)["pi4"]["boot"]
    os.kill(pids["pi4"], signal.SIGKILL)
    # the demo restarts it within seconds, before it would count as quiet: the new boot id in its
    # hello is how the hub sees the restart
    wait_for(lambda: (n := readings(web)["pi4"])["restarts"] >= 1 and n["boot"] != boot and n["online"],
             timeout=45, interval=0.5, what="pi4 seen restarted and back online")
    def card_status() -> str:  # the page's update is rebuilt in the background: a second or two behind
        with urllib.request.urlopen(f"http://{HOST}:{web}/api/dashboard", timeout=5) as res:
            return json.load(res)["nodes"]["pi4"]["status"]

    wait_for(lambda: "restarted" in card_status(), timeout=30, interval=0.5, what="pi4's card saying it restarted")
    new_pid = fleet["pi4"]["agent"].info()["pid"]
    assert new_pid != pids["pi4"]
    pids["pi4"] = new_pid

    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "pi4 exited with code -9; restarting" in out and "all nodes stopped" in out
    assert f"dashboard: http://{HOST}:{web}/" in out
    wait_for(lambda: not any(alive(p) for p in pids.values()), timeout=10, what="no orphaned node process")
