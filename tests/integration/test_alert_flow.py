"""The alert table end to end: a hot room on pi4 lights LED 1 red, sounds the buzzer, and the
hub holds the alert (raised, then cleared) — bundled plugin, real sandbox, real hub store."""

from __future__ import annotations

import shutil
from pathlib import Path

from actors.client import connect
from tests.helpers import HOST, wait_for

BUNDLED = Path(__file__).resolve().parents[2] / "plugins" / "bundled"


def test_alert_flow_hot_room_raises_lights_beeps_and_clears(cluster, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(BUNDLED / "room_temperature.py", plugins)
    manifest = (BUNDLED / "room_temperature.toml").read_text()
    # the operator's copy: a 1 s hold instead of 30 s, so the test does not wait half a minute
    (plugins / "room_temperature.toml").write_text(manifest.replace("hold_s = 30.0", "hold_s = 1.0"))
    agent = cluster.start_node("pi4", sensors=[{"name": "dht22", "kind": "dht22", "interval": 0.5}],
                               leds=True, buzzer=True, extra=f'[plugins]\ndir = "{plugins}"\n')
    fleet = connect(HOST, cluster.ns_port)
    wait_for(lambda: any(p["name"] == "room_temperature" and p["state"] == "ok"
                         for p in fleet["pi4"]["plugins"].list()), timeout=60, what="plugin loaded")
    wait_for(lambda: fleet["pi4"]["leds"].state()["pixels"][1] == [0, 255, 0], what="LED 1 green in a mild room")

    agent.hal.room.pin(temperature=35.0)
    alert = wait_for(lambda: cluster.hub.hub.alerts(), timeout=30, what="the alert at the hub")[0]
    assert (alert["plugin"], alert["node"], alert["sensor"], alert["severity"]) == \
        ("room_temperature", "pi4", "dht22", "warning")
    assert fleet["pi4"]["leds"].state()["pixels"][1] == [255, 0, 0]
    assert fleet["pi4"]["buzzer"].state()["beeps"] >= 1

    agent.hal.room.pin(temperature=22.0)
    wait_for(lambda: not cluster.hub.hub.alerts(), timeout=30, what="the alert cleared at the hub")
    assert [e["state"] for e in cluster.hub.hub.store.alert_history(0)][:2] == ["cleared", "raised"]
    wait_for(lambda: fleet["pi4"]["leds"].state()["pixels"][1] == [0, 255, 0], what="LED 1 green again")
