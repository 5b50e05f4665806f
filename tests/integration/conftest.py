"""Real Pyro5 name server and node agents on free 127.0.0.1 ports, in this process."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.cli.compose import build_node
from actors.node.agent import NodeAgent
from actors.node.config import load_config
from tests.helpers import free_port, wait_for, write_node_config

BUNDLED = Path(__file__).resolve().parents[2] / "plugins" / "bundled"
SPOKE_SENSORS = [{"name": "dht22", "kind": "dht22", "interval": 0.5},
                 {"name": "monitor", "kind": "monitor", "interval": 0.5}]


class Cluster:
    """A hub plus any number of spokes, each a real NodeAgent with its own Pyro5 daemon."""

    def __init__(self, tmp_path, ns_port: int | None = None, embedded: bool = True) -> None:
        self.tmp = tmp_path
        self.embedded = embedded
        self.ns_port = ns_port or free_port()
        self.web_port = free_port()
        self.agents: dict[str, NodeAgent] = {}

    def start_node(self, name: str, role: str = "spoke", **kwargs) -> NodeAgent:
        web = self.web_port if role == "hub" else None
        if role == "hub" and not self.embedded:
            kwargs["extra"] = kwargs.get("extra", "")  # the [hub] table is written by the helper
            kwargs["embedded_nameserver"] = False
        path = write_node_config(self.tmp / f"{name}.toml", name, role, self.ns_port, web_port=web, **kwargs)
        agent = build_node(load_config(path))
        agent.start()
        self.agents[name] = agent
        return agent

    def stop_node(self, name: str) -> None:
        self.agents.pop(name).stop()

    @property
    def hub(self) -> NodeAgent:
        return self.agents["hub"]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def node_snapshot(self, name: str) -> dict | None:
        for node in self.hub.role.hub.snapshot()["nodes"]:
            if node["name"] == name:
                return node
        return None

    def stop(self) -> None:
        for name in list(self.agents)[::-1]:
            self.stop_node(name)


@pytest.fixture
def cluster_factory(tmp_path) -> Iterator:
    """Make a cluster whose hub uses an external name server at a given port."""
    made: list[Cluster] = []

    def make(ns_port: int, embedded: bool = True, **hub: Any) -> Cluster:
        c = Cluster(tmp_path, ns_port, embedded)
        c.start_node("hub", "hub", **{"sensors": [{"name": "monitor", "kind": "monitor", "interval": 1.0}], **hub})
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    c.start_node("hub", "hub", sensors=[{"name": "monitor", "kind": "monitor", "interval": 1.0}])
    wait_for(lambda: c.hub.registrar.sweeps > 0, what="hub registered its names")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def pi4(cluster) -> NodeAgent:
    """A spoke with a DHT22, a monitor, LEDs and a buzzer, online at the hub with readings and probed actors."""
    agent = cluster.start_node("pi4", sensors=SPOKE_SENSORS, leds=True, buzzer=True)
    wait_for(lambda: (n := cluster.node_snapshot("pi4")) and n["online"] and n["sensors"].get("dht22")
             and n["sensors"].get("monitor") and n["actors"].get("buzzer") and n.get("outbox")
             and cluster.node_snapshot("hub")["sensors"].get("monitor"),
             what="pi4 online at the hub with readings and probed actors")
    return agent


def start_room_plugin_node(cluster: Cluster, plugins: Path, **kwargs) -> NodeAgent:
    """pi4 with a DHT22, LEDs, a buzzer and the bundled room-temperature plugin, loaded.

    The operator's copy of the manifest holds an alert for 1 s instead of 30 s, so a test
    does not wait half a minute for it."""
    plugins.mkdir()
    shutil.copy(BUNDLED / "room_temperature.py", plugins)
    manifest = (BUNDLED / "room_temperature.toml").read_text()
    (plugins / "room_temperature.toml").write_text(manifest.replace("hold_s = 30.0", "hold_s = 1.0"))
    agent = cluster.start_node("pi4", sensors=[{"name": "dht22", "kind": "dht22", "interval": 0.5}],
                               leds=True, buzzer=True, extra=f'[plugins]\ndir = "{plugins}"\n', **kwargs)
    runner = next(a for a in agent.actors if a.name == "plugins")
    wait_for(lambda: any(p["name"] == "room_temperature" and p["state"] == "ok" for p in runner.list()),
             timeout=60, what="the room-temperature plugin loaded")
    # the hub must know the node too: the dashboard's commands to it are refused until then
    wait_for(lambda: (n := cluster.node_snapshot("pi4")) and n["online"], what="pi4 online at the hub")
    return agent
