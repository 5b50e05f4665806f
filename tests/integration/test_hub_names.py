"""A hub may have any valid name: spokes find its aggregator by what it is, or by the name in their config."""

from __future__ import annotations

import pytest

from actors.cli.compose import build_node
from actors.cli.main import main
from actors.node.agent import NodeAgent
from actors.node.config import load_config
from nameserver.registry import HubNotFound, find_aggregator
from tests.helpers import free_port, wait_for, write_node_config

SENSORS = [{"name": "dht22", "kind": "dht22", "interval": 0.5}]


@pytest.fixture
def central(tmp_path):
    """A hub called `central` on its own name server."""
    ns = free_port()
    agent = build_node(load_config(write_node_config(
        tmp_path / "central.toml", "central", "hub", ns, web_port=free_port(),
        sensors=[{"name": "monitor", "kind": "monitor", "interval": 1.0}])))
    agent.start()
    yield agent, ns
    agent.stop()


@pytest.mark.parametrize("hub_name", [None, "central"])
def test_hub_names_a_hub_called_central_gets_the_spokes_readings(tmp_path, central, hub_name):
    hub, ns = central
    spoke = NodeAgent(load_config(write_node_config(tmp_path / "pi4.toml", "pi4", "spoke", ns, sensors=SENSORS,
                                                    hub_name=hub_name)))
    spoke.start()
    try:
        def pi4_at_central():
            node = next((n for n in hub.role.hub.snapshot()["nodes"] if n["name"] == "pi4"), None)
            return node and node["online"] and node["sensors"].get("dht22") and node["last_seq"] >= 2

        wait_for(pi4_at_central, timeout=30, what="pi4's readings stored at the hub called central")
        assert hub.role.hub.store.count("pi4") > 0
        # `harvester health` asks the hub's view through the same discovery
        assert main(["health", "--node", "pi4", "--ns", f"127.0.0.1:{ns}"]) == 0
        wait_for(lambda: spoke.role.outbox.stats()["pending_batches"] <= 1, what="pi4's outbox drained")
    finally:
        spoke.stop()


def test_hub_names_a_spoke_naming_another_hub_keeps_its_readings(tmp_path, central):
    hub, ns = central
    spoke = NodeAgent(load_config(write_node_config(tmp_path / "pi4.toml", "pi4", "spoke", ns, sensors=SENSORS,
                                                    hub_name="elsewhere")))
    spoke.start()
    try:
        wait_for(lambda: spoke.role.outbox.stats()["pending_batches"] >= 3, what="batches kept in the outbox")
        assert spoke.role.push_once() == 0
        assert "pi4" not in hub.role.hub.node_names()
    finally:
        spoke.stop()


class FakeNameServer:
    """The two name-server calls find_aggregator makes, over a fixed registry."""

    def __init__(self, entries: dict[str, tuple[str, set[str]]]) -> None:
        self.entries = entries

    def lookup(self, name: str) -> str:
        return self.entries[name][0]

    def yplookup(self, meta_all: set[str], return_metadata: bool = False) -> dict[str, str]:
        return {n: uri for n, (uri, meta) in self.entries.items() if meta_all <= meta}


HUB_TAGS = {"role:hub", "kind:aggregator", "node:x"}


def test_hub_names_find_aggregator_by_tags_by_name_and_refuses_to_guess():
    one = FakeNameServer({"harvester.central.aggregator": ("PYRO:a@127.0.0.1:1", HUB_TAGS),
                          "harvester.pi4.agent": ("PYRO:b@127.0.0.1:2", {"role:spoke", "kind:agent"})})
    assert find_aggregator(one, None) == ("harvester.central.aggregator", "PYRO:a@127.0.0.1:1")
    assert find_aggregator(one, "central") == ("harvester.central.aggregator", "PYRO:a@127.0.0.1:1")
    with pytest.raises(HubNotFound, match="no hub aggregator"):
        find_aggregator(FakeNameServer({}), None)
    two = FakeNameServer({"harvester.h1.aggregator": ("PYRO:a@127.0.0.1:1", HUB_TAGS),
                          "harvester.h2.aggregator": ("PYRO:c@127.0.0.1:3", HUB_TAGS)})
    with pytest.raises(HubNotFound, match=r"several hubs are registered \(h1, h2\): set hub.name"):
        find_aggregator(two, None)
    assert find_aggregator(two, "h2") == ("harvester.h2.aggregator", "PYRO:c@127.0.0.1:3")


def test_hub_names_config_check_catches_a_spoke_naming_a_missing_hub(tmp_path, capsys):
    hub = write_node_config(tmp_path / "central.toml", "central", "hub", 9090, web_port=8080)
    good = write_node_config(tmp_path / "pi4.toml", "pi4", "spoke", 9090, hub_name="central")
    bad = write_node_config(tmp_path / "pizero.toml", "pizero", "spoke", 9090, hub_name="hub")
    assert main(["config", "check", str(hub), str(good)]) == 0
    assert main(["config", "check", str(hub), str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: hub.name: names hub 'hub', but the hub config given is 'central' ({hub})" in out
    assert main(["config", "check", str(bad)]) == 0  # alone, nothing says which hubs exist
    mismatched = write_node_config(tmp_path / "h.toml", "central", "hub", 9090, web_port=8080, hub_name="other")
    assert main(["config", "check", str(mismatched)]) == 1
    assert "hub.name: names hub 'other', but this hub is called 'central'" in capsys.readouterr().out


def test_hub_names_a_spoke_started_before_its_hub_registers_as_soon_as_the_hub_is_up(tmp_path):
    """Its regular sweep is a minute away; its names must not be."""
    ns = free_port()
    cfg = write_node_config(tmp_path / "pi4.toml", "pi4", "spoke", ns, sensors=SENSORS)
    cfg.write_text(cfg.read_text().replace("register_interval = 1", "register_interval = 60"))
    spoke = NodeAgent(load_config(cfg))
    spoke.start()  # the name server is not there: the first sweep fails
    hub = None
    try:
        assert spoke.registrar.sweeps == 0
        hub = build_node(load_config(write_node_config(tmp_path / "hub.toml", "hub", "hub", ns, web_port=free_port())))
        hub.start()
        wait_for(lambda: spoke.registrar.sweeps >= 1, timeout=20, what="pi4's names registered")
        from actors.client import connect

        assert "pi4" in connect("127.0.0.1", ns)
    finally:
        spoke.stop()
        if hub is not None:
            hub.stop()
