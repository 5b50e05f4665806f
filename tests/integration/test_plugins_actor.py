"""The plugin runner on the wire, and a hub plugin driving a spoke's LED and buzzer through its actors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from Pyro5.api import Daemon, Proxy

from actors.devices.actuators import BuzzerActor, LedsActor
from actors.devices.plugin_runner import PluginsActor, remote_actuators
from actors.errors import BadRequest
from hal.buzzer import BuzzerDevice
from hal.leds import COLOURS, LedStrip, MemoryPixels
from nameserver.pyro import configure
from plugins.host import PluginHost
from plugins.services import NodeServices, RecordingServices
from tests.helpers import wait_for
from tests.plugins_fixtures import STEADY, manifest_toml, reading, wasm_backend, write_plugin

__all__ = ["wasm_backend"]

ALARM = '''
def evaluate(readings, host):
    r = readings[0]
    if r.value > 30:
        host.set_led(1, "red", node=r.node)
        host.beep(2, 100, node=r.node)
        host.raise_alert("hot", "too hot", node=r.node, sensor=r.sensor, value=r.value)
    return {"value": r.value}
'''


@pytest.fixture
def served(tmp_path: Path, wasm_backend: Any) -> Iterator[tuple[Any, PluginHost]]:
    configure()
    folder = tmp_path / "plugins"
    write_plugin(folder, "steady", STEADY, leds=[0])
    write_plugin(folder, "alarm", ALARM, leds=[1], buzzer=True)
    host = PluginHost("pi4", folder, "wasm", RecordingServices("pi4"), tmp_path / "state", backend=wasm_backend)
    host.scan()
    actor = PluginsActor("pi4", host)
    daemon = Daemon(host="127.0.0.1", port=0)
    uri = daemon.register(actor, objectId=actor.object_name)
    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()
    proxy = Proxy(uri)
    proxy._pyroTimeout = 10
    try:
        yield proxy, host
    finally:
        proxy._pyroRelease()
        daemon.shutdown()
        thread.join(timeout=10)
        host.close()


def test_plugins_actor_lists_evaluates_and_controls(served: tuple[Any, PluginHost]) -> None:
    proxy, host = served
    assert [row["name"] for row in proxy.list()] == ["alarm", "steady"]
    batch = [reading("temperature", 35.0, host.clock()).to_dict()]
    dry = proxy.evaluate(batch)
    assert {o["plugin"] for o in dry} == {"alarm", "steady"} and all(o["dry_run"] for o in dry)
    assert host.alerts.active() == []  # a dry run raised nothing
    live = {o["plugin"]: o for o in proxy.evaluate(batch, None, True)}
    assert live["alarm"]["alerts"][0]["result"] == "raised"
    assert [a["alert"] for a in proxy.alerts()["active"]] == ["hot"]
    assert [e["state"] for e in proxy.acknowledge("hot")] == ["acknowledged"]
    assert proxy.status("alarm")["calls"] == 2  # the dry run counts as a call
    assert proxy.disable("alarm")["state"] == "disabled"
    assert [o["plugin"] for o in proxy.evaluate(batch)] == ["steady"]
    assert proxy.enable("alarm")["state"] == "ok"
    assert proxy.reload() == {"loaded": [], "reloaded": [], "removed": [], "failed": {}}
    with pytest.raises(BadRequest, match="no plugin 'nope'"):
        proxy.status("nope")
    with pytest.raises(BadRequest, match="outside the plausible range"):
        proxy.evaluate([{**batch[0], "value": 900.0}])
    assert "acknowledge" in proxy.describe()


def test_a_hub_plugin_drives_a_spokes_led_and_buzzer(cluster: Any, tmp_path: Path, wasm_backend: Any) -> None:
    spoke = cluster.start_node("pi4", leds=True, buzzer=True)
    wait_for(lambda: spoke.registrar.sweeps > 0, what="pi4 registered its actors")
    actors = {a.name: a for a in spoke.actors}
    folder = tmp_path / "hub-plugins"
    manifest = manifest_toml("alarm", extra="[permissions.nodes.pi4]\nleds = [1]\nbuzzer = true\n")
    write_plugin(folder, "alarm", ALARM, manifest=manifest.replace('version = "1.0"', 'version = "1.0"\nnodes = ["*"]'))
    events: list[dict[str, Any]] = []
    services = NodeServices("hub", alert_sink=events.append, remote=remote_actuators("127.0.0.1", cluster.ns_port))
    host = PluginHost("hub", folder, "wasm", services, tmp_path / "hub-state", backend=wasm_backend)
    try:
        host.scan()
        out = host.evaluate([reading("temperature", 33.0, host.clock(), node="pi4")])[0]
        assert out["ok"] and [a["result"] for a in out["actions"]] == ["ok", "ok"], out
        assert actors["leds"].state()["pixels"][1] == list(COLOURS["red"])
        assert actors["buzzer"].state()["beeps"] >= 1
        assert events[0]["node"] == "pi4" and events[0]["raised_by"] == "hub"
        host.acknowledge("hot")
        assert actors["buzzer"].state()["last_command"]["command"] == "silence"
        # a spoke the plugin was not granted is refused before any remote call
        out = host.evaluate([reading("temperature", 33.0, host.clock(), node="pizero")])[0]
        assert not out["ok"] and "node pizero" in out["error"]
    finally:
        host.close()


def test_node_services_drive_the_nodes_own_actors_in_process(tmp_path: Path, wasm_backend: Any) -> None:
    factory = MockFactory(pin_class=MockPWMPin)
    leds = LedsActor("pi4", lambda: LedStrip(MemoryPixels(count=11)))
    buzzer = BuzzerActor("pi4", lambda: BuzzerDevice(17, factory))
    folder = tmp_path / "plugins"
    write_plugin(folder, "alarm", ALARM, leds=[1], buzzer=True)
    host = PluginHost("pi4", folder, "wasm", NodeServices("pi4", leds, buzzer), tmp_path / "state",
                      backend=wasm_backend)
    try:
        host.scan()
        out = host.evaluate([reading("temperature", 33.0, host.clock())])[0]
        assert [a["result"] for a in out["actions"]] == ["ok", "ok"], out
        assert leds.state()["pixels"][1] == list(COLOURS["red"]) and buzzer.state()["beeps"] >= 1
        assert leds.health()["calls"] >= 1  # the plugin went through the actor, like any caller
    finally:
        host.close()
        leds.close()
        buzzer.close()
        factory.close()
