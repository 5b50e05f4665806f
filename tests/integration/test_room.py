"""The room actor end to end: a user at the REPL makes pi4's room hot, and the bundled alert table
fires for real (hub alert, LED 1 red, the buzzer); released, it clears. Real hardware has no room."""

from __future__ import annotations

import logging
import math
import re

import pytest

from actors.client import connect
from actors.errors import BadRequest
from actors.node.agent import NodeAgent
from actors.node.config import load_config
from tests.helpers import HOST, free_port, wait_for, write_node_config
from tests.integration.conftest import start_room_plugin_node

GREEN, RED = [0, 255, 0], [255, 0, 0]


def test_pinning_the_room_from_the_repl_fires_the_alert_and_release_clears_it(cluster, tmp_path, caplog):
    start_room_plugin_node(cluster, tmp_path / "plugins")
    fleet = connect(HOST, cluster.ns_port)  # as a user would, over the name server
    assert "room" in fleet["pi4"].actors() and "room" in fleet["hub"].actors()  # every mock-mode node has one
    room, leds, buzzer = fleet["pi4"]["room"], fleet["pi4"]["leds"], fleet["pi4"]["buzzer"]
    assert "pin" in room.describe() and "calibrating" in room.describe()["pin"]
    wait_for(lambda: leds.state()["pixels"][1] == GREEN, what="LED 1 green in a mild room")
    beeps = buzzer.state()["beeps"]

    # refused over the wire, typed, and nothing pinned
    for bad in ({"temperature": math.nan}, {"bogus": 1.0}, {"temperature": 35.0, "humidity": 120.0}):
        with pytest.raises(BadRequest):
            room.pin(**bad)
    assert room.state()["pinned"] == {}

    with caplog.at_level(logging.INFO, logger="actors.devices.room"):
        state = room.pin(temperature=35)
    assert state["pinned"] == {"temperature": 35.0} and state["conditions"]["temperature"] == 35.0
    pinned_logs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("room pinned")]
    assert len(pinned_logs) == 1 and re.fullmatch(r"room pinned by 127\.0\.0\.1:\d+: temperature=35", pinned_logs[0])

    alert = wait_for(lambda: cluster.hub.role.hub.alerts(), timeout=30, what="the alert at the hub")[0]
    assert (alert["plugin"], alert["node"], alert["sensor"], alert["severity"]) == \
        ("room_temperature", "pi4", "dht22", "warning")
    wait_for(lambda: leds.state()["pixels"][1] == RED, what="LED 1 red")
    wait_for(lambda: buzzer.state()["beeps"] > beeps, what="the buzzer sounded")
    wait_for(lambda: fleet["pi4"]["dht22"].latest()[0]["value"] == 35.0, what="the DHT22 reading 35 °C")

    assert room.release()["pinned"] == {}
    wait_for(lambda: not cluster.hub.role.hub.alerts(), timeout=30, what="the alert cleared at the hub")
    assert [e["state"] for e in cluster.hub.role.hub.store.alert_history(0)][:2] == ["cleared", "raised"]
    wait_for(lambda: leds.state()["pixels"][1] == GREEN, what="LED 1 green again")


@pytest.mark.parametrize("hal, has_room", [("real", False), ("mock", True)])
def test_only_a_mock_mode_node_builds_a_room_actor(tmp_path, hal, has_room):
    config = write_node_config(tmp_path / "pi4.toml", "pi4", "spoke", free_port(), leds=True, buzzer=True,
                               sensors=[{"name": "dht22", "kind": "dht22", "interval": 0.5},
                                        {"name": "bme680", "kind": "bme680", "interval": 1.0}])
    agent = NodeAgent(load_config(config), hal_mode=hal)  # hardware is touched only when a device is used
    try:
        agent._build_actors()  # what start() registers, one name each
        assert agent.hal.mode == hal
        names = {a.object_name for a in agent.actors}
        assert ("harvester.pi4.room" in names) is has_room
        assert ("harvester.pi4.room" in agent.actors[-1].info()["actors"]) is has_room  # the agent's own listing
        if has_room:
            room = next(a for a in agent.actors if a.name == "room")
            assert room.iaq_sensors == ("bme680",) and room.metadata() >= {"node:pi4", "kind:room", "actor:room"}
    finally:
        agent.stop()
