"""The open sensor model end to end: a spoke with the new sensor kinds in mock mode (no keys beyond
the real defaults) and a scaffolded plugin sensor that declares its own quantity, read over its
I2C grant from an emulated ADS1115. The hub's code and config know nothing of that quantity."""

from __future__ import annotations

import json
import re
import urllib.request

from actors.cli.main import main
from tests.helpers import wait_for

NEW_KINDS = [{"name": "probe", "kind": "ds18b20", "interval": 1.0},
             {"name": "air", "kind": "sht4x", "interval": 1.0},
             {"name": "co2", "kind": "scd4x", "interval": 1.0},
             {"name": "light", "kind": "bh1750", "interval": 1.0},
             {"name": "bed", "kind": "ads1115", "address": 0x4A, "interval": 1.0}]
# the plugin's ADC: a chip of its own on the emulated bus, where its I2C grant points
MOCK_ADC = "[mock]\n[[mock.i2c]]\nbus = 1\naddress = 0x48\nchip = \"ads1115\"\n"
EXPECTED = {("probe", "temperature"), ("air", "temperature"), ("air", "humidity"), ("co2", "co2"),
            ("co2", "temperature"), ("co2", "humidity"), ("light", "illuminance"), ("bed", "soil_moisture"),
            ("soil", "soil_voltage")}


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as res:
        return res.read().decode()


def test_new_kinds_and_a_declared_plugin_quantity_reach_the_dashboard_and_metrics(cluster, tmp_path, capsys):
    plugins = tmp_path / "plugins"
    assert main(["plugins", "new", "soil", "--sensor", "--dir", str(plugins)]) == 0
    capsys.readouterr()
    cluster.start_node("pi4", sensors=NEW_KINDS, extra=MOCK_ADC + f'[plugins]\ndir = "{plugins}"\n')

    def values() -> dict[tuple[str, str], dict]:
        node = cluster.node_snapshot("pi4") or {"sensors": {}}
        return {(s, q): r for s, qs in node["sensors"].items() for q, r in qs.items() if r["value"] is not None}
    got = wait_for(lambda: set(values()) >= EXPECTED and values(), timeout=60, interval=0.5,
                   what="a value of every new kind and of the plugin's declared quantity at the hub")
    assert got["soil", "soil_voltage"]["unit"] == "V" and -0.3 <= got["soil", "soil_voltage"]["value"] <= 4.2
    assert got["co2", "co2"]["unit"] == "ppm" and got["light", "illuminance"]["unit"] == "lx"

    page = get(cluster.url("/"))
    assert "Soil voltage" in page and "range -0.3 to 4.2 V" in page
    metrics = get(cluster.url("/metrics"))
    assert re.search(r'harvester_reading\{node="pi4",sensor="soil",quantity="soil_voltage",unit="V"\} [-0-9.]+',
                     metrics), metrics[-2000:]
    for family in ("harvester_co2_ppm", "harvester_illuminance_lux", "harvester_soil_moisture_ratio"):
        assert re.search(rf'{family}\{{node="pi4",sensor="[a-z0-9]+"\}} [0-9.]+', metrics), family
    history = json.loads(get(cluster.url("/api/history?node=pi4&sensor=soil&quantity=soil_voltage")))
    assert history["points"] and all(-0.3 <= v <= 4.2 for _, v in history["points"])
    csv = get(cluster.url("/api/history?node=pi4&sensor=soil&quantity=soil_voltage&format=csv"))
    assert csv.splitlines()[0] == "ts,soil_voltage (V)" and len(csv.splitlines()) == len(history["points"]) + 1
    # what the hub knows of it came from pi4's hello, not from the hub's code or config
    assert cluster.hub.role.hub.quantities.lookup("soil_voltage", "pi4").device_class == "voltage"
    assert "soil_voltage" not in {q.name for q in cluster.hub.config.quantities}
