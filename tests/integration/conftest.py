"""Real Pyro5 name server and node agents on free 127.0.0.1 ports, in this process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors.agent import NodeAgent
from actors.config import load_config
from tests.helpers import free_port, wait_for, write_node_config


class Cluster:
    """A hub plus any number of spokes, each a real NodeAgent with its own Pyro5 daemon."""

    def __init__(self, tmp_path) -> None:
        self.tmp = tmp_path
        self.ns_port = free_port()
        self.web_port = free_port()
        self.agents: dict[str, NodeAgent] = {}

    def start_node(self, name: str, role: str = "spoke", **kwargs) -> NodeAgent:
        web = self.web_port if role == "hub" else None
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
def cluster(tmp_path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    c.start_node("hub", "hub", sensors=[{"name": "monitor", "kind": "monitor", "interval": 1.0}])
    wait_for(lambda: c.hub.registrar.sweeps > 0, what="hub registered its names")
    try:
        yield c
    finally:
        c.stop()
