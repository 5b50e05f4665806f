"""The alert table end to end: a hot room on pi4 lights LED 1 red, sounds the buzzer, and the
hub holds the alert (raised, then cleared) — bundled plugin, real sandbox, real hub store."""

from __future__ import annotations

from actors.client import connect
from tests.helpers import HOST, wait_for
from tests.integration.conftest import start_room_plugin_node


def test_alert_flow_hot_room_raises_lights_beeps_and_clears(cluster, tmp_path):
    agent = start_room_plugin_node(cluster, tmp_path / "plugins")
    fleet = connect(HOST, cluster.ns_port)
    wait_for(lambda: fleet["pi4"]["leds"].state()["pixels"][1] == [0, 255, 0], what="LED 1 green in a mild room")

    agent.hal.room.pin(temperature=35.0)
    alert = wait_for(lambda: cluster.hub.role.hub.alerts(), timeout=30, what="the alert at the hub")[0]
    assert (alert["plugin"], alert["node"], alert["sensor"], alert["severity"]) == \
        ("room_temperature", "pi4", "dht22", "warning")
    assert fleet["pi4"]["leds"].state()["pixels"][1] == [255, 0, 0]
    assert fleet["pi4"]["buzzer"].state()["beeps"] >= 1

    agent.hal.room.pin(temperature=22.0)
    wait_for(lambda: not cluster.hub.role.hub.alerts(), timeout=30, what="the alert cleared at the hub")
    assert [e["state"] for e in cluster.hub.role.hub.store.alert_history(0)][:2] == ["cleared", "raised"]
    wait_for(lambda: fleet["pi4"]["leds"].state()["pixels"][1] == [0, 255, 0], what="LED 1 green again")
