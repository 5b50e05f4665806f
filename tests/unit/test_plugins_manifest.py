"""Plugin manifests: schema, every problem named, grants as the host reads them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from plugins.errors import ManifestError
from plugins.host import BUNDLED_DIR
from plugins.manifest import load_manifest, parse_manifest


def test_manifest_full_example_parses() -> None:
    m = parse_manifest(tomllib.loads('''
[plugin]
name = "room"
version = "2.1"
description = "hot room"
quantities = ["temperature"]
nodes = ["pi4"]
[permissions]
leds = [1, 2]
buzzer = true
i2c = [{ bus = 1, address = 0x77, mode = "rw" }]
[permissions.nodes.pi4]
leds = [3]
[limits]
call_ms = 20
memory_mb = 24
[sensor]
interval = 5
quantities = ["temperature"]
[config]
high = 30.5
sensors = ["dht22"]
'''))
    assert m.name == "room" and m.version == "2.1"
    assert m.permissions.for_node(None).leds == {1, 2} and m.permissions.for_node(None).buzzer
    assert m.permissions.for_node("pi4").leds == {3} and not m.permissions.for_node("pi4").buzzer
    assert m.permissions.for_node("pizero").leds == frozenset()
    assert m.permissions.i2c == ((1, 0x77, "rw"),)
    assert (m.limits.call_ms, m.limits.memory_mb) == (20, 24)
    assert m.sensor is not None and m.sensor.quantities == ("temperature",)
    assert m.config == {"high": 30.5, "sensors": ["dht22"]}
    assert m.wants({"temperature", "humidity"}, "pi4", "hub") and not m.wants({"iaq"}, "pi4", "hub")
    assert not m.wants({"temperature"}, "hub", "hub")  # it names the nodes it judges


def test_manifest_defaults_grant_nothing() -> None:
    m = parse_manifest({"plugin": {"name": "x", "version": "1"}})
    assert m.permissions.local.leds == frozenset() and not m.permissions.local.buzzer
    assert m.permissions.i2c == ()
    assert (m.limits.call_ms, m.limits.memory_mb) == (50, 32)
    assert m.wants({"anything"}, "pi4", "pi4")
    assert not m.wants({"anything"}, "pizero", "pi4")  # a plugin judges its own node unless told
    star = parse_manifest({"plugin": {"name": "x", "version": "1", "nodes": ["*"]}})
    assert star.wants({"iaq"}, "pizero", "hub")


def test_manifest_lists_every_problem() -> None:
    with pytest.raises(ManifestError) as err:
        parse_manifest({"plugin": {"name": "Bad Name", "colour": "red", "nodes": ["Pi 4"]},
                        "permissions": {"leds": [-1], "buzzer": "yes", "i2c": [{"bus": 1, "address": 0x90}]},
                        "limits": {"call_ms": 0, "memory_mb": 8},
                        "extra": {}}, where="x.toml")
    text = str(err.value)
    for fragment in ("x.toml", "plugin.name", "plugin.version", "plugin.colour", "plugin.nodes", "permissions.leds",
                     "permissions.buzzer", "permissions.i2c", "limits.call_ms", "limits.memory_mb", "extra"):
        assert fragment in text


def test_manifest_name_must_match_file() -> None:
    with pytest.raises(ManifestError, match="does not match the plugin file name"):
        parse_manifest({"plugin": {"name": "a", "version": "1"}}, expected_name="b")


def test_manifest_unknown_quantity_is_refused() -> None:
    with pytest.raises(ManifestError, match="unknown quantity 'temprature'"):
        parse_manifest({"plugin": {"name": "a", "version": "1", "quantities": ["temprature"]}})


def test_manifest_config_without_json_form_is_refused() -> None:
    data = tomllib.loads('[plugin]\nname = "a"\nversion = "1"\n[config]\nwhen = 1979-05-27\n')
    with pytest.raises(ManifestError, match="config"):
        parse_manifest(data)


def test_manifest_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[plugin\n")
    with pytest.raises(ManifestError, match="not valid TOML"):
        load_manifest(bad)


@pytest.mark.parametrize("name", ["room_temperature", "cpu_temperature", "air_quality"])
def test_bundled_manifests_are_valid(name: str) -> None:
    m = load_manifest(BUNDLED_DIR / f"{name}.toml", expected_name=name)
    assert m.config["high"] > m.config["warn"]
    assert m.config["led"] in m.permissions.local.leds

