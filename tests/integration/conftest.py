"""Real Pyro5 name server and node agents on free 127.0.0.1 ports, in this process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors.agent import NodeAgent
from actors.config import load_config
from tests.helpers import free_port, wait_for, write_node_config


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
        agent = NodeAgent(load_config(path))
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
        for node in self.hub.hub.snapshot()["nodes"]:
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

    def make(ns_port: int, embedded: bool = True) -> Cluster:
        c = Cluster(tmp_path, ns_port, embedded)
        c.start_node("hub", "hub", sensors=[{"name": "monitor", "kind": "monitor", "interval": 1.0}])
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
