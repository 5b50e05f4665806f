"""Quantities as data: declared in a node's config or a plugin's manifest, told to the hub in hello,
validated per node, refused when they conflict; the dashboard, /metrics and CSV follow."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from actors.errors import BadRequest
from actors.hub.state import Hub
from actors.hub.store import Store
from actors.node.config import ConfigError, parse_config
from hal.errors import ReadingError
from hal.readings import QUANTITIES, Reading, declare, declared, forget, lookup, parse_quantity
from plugins.errors import ManifestError
from plugins.manifest import parse_manifest
from web import view

EC = {"name": "soil_ec", "unit": "mS/cm", "low": 0.0, "high": 20.0, "description": "soil conductivity",
      "device_class": "conductivity"}


@pytest.fixture(autouse=True)
def clean_registry():
    yield
    for by in ("pi4's config", "test", "other", "plugin probe"):
        forget(by)


def hello(name: str, *quantities: dict) -> dict:
    return {"node": name, "role": "spoke", "profile": "wasm", "push_interval": 1.0, "quantities": list(quantities)}


def batch(node: str, seq: int, quantity: str, value: float, unit: str) -> dict:
    return {"node": node, "seq": seq, "readings": [{"sensor": "probe", "quantity": quantity, "value": value,
                                                     "unit": unit, "ts": time.time()}]}


@pytest.fixture
def hub(tmp_path: Path):
    h = Hub(Store(tmp_path / "hub.sqlite3"))
    yield h
    h.store.close()


# -- the table --------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "words"), [
    ({**EC, "name": "Soil EC"}, "name must match"),
    ({**EC, "unit": "x" * 17}, "at most 16"),
    ({**EC, "low": 5, "high": 5}, "must be below high"),
    ({**EC, "high": float("inf")}, "finite"),
    ({**EC, "device_class": "dirt"}, "not one of Home Assistant's"),
    ({**EC, "colour": "red"}, "unknown key"),
    ("soil_ec", "must be a table"),
])
def test_a_declaration_names_what_is_wrong(raw, words):
    with pytest.raises(ReadingError, match=words):
        parse_quantity(raw)


def test_the_built_ins_carry_home_assistants_device_classes():
    assert QUANTITIES["pressure"].device_class == "atmospheric_pressure"
    assert QUANTITIES["co2"].device_class == "carbon_dioxide" and QUANTITIES["co2"].unit == "ppm"
    assert QUANTITIES["illuminance"].unit == "lx" and QUANTITIES["gas_resistance"].device_class is None


def test_a_declared_quantity_makes_readings_of_it_possible_in_this_process():
    with pytest.raises(ReadingError, match="unknown quantity 'soil_ec'"):
        Reading.measured("pi4", "probe", "soil_ec", 1.5, 1.0)
    declare(parse_quantity(EC), "test")
    r = Reading.measured("pi4", "probe", "soil_ec", 1.5, 1.0)
    assert r.unit == "mS/cm" and lookup("soil_ec").device_class == "conductivity"
    with pytest.raises(ReadingError, match="outside the plausible range"):
        Reading.measured("pi4", "probe", "soil_ec", 21.0, 1.0)
    forget("test")
    assert lookup("soil_ec") is None and declared() == []


def test_a_built_in_keeps_its_unit_and_two_declarers_must_agree():
    with pytest.raises(ReadingError, match="temperature is built in, measured in '°C'"):
        declare(parse_quantity({"name": "temperature", "unit": "K", "low": 0, "high": 500}), "test")
    declare(parse_quantity({"name": "temperature", "unit": "°C", "low": 0, "high": 50}), "test")  # changes nothing
    assert QUANTITIES["temperature"].low == -55
    declare(parse_quantity(EC), "test")
    with pytest.raises(ReadingError, match="by test"):
        declare(parse_quantity({**EC, "unit": "µS/cm"}), "other")


# -- the hub -----------------------------------------------------------------------------------
def test_the_hub_takes_readings_of_what_a_node_declared_and_refuses_the_rest(hub):
    hub.hello(hello("pi4", EC))
    assert hub.push([batch("pi4", 1, "soil_ec", 1.5, "mS/cm")])["acked"] == [1]
    with pytest.raises(BadRequest, match="unknown quantity 'soil_ph': neither built in nor declared by pi4"):
        hub.push([batch("pi4", 2, "soil_ph", 6.5, "pH")])
    with pytest.raises(BadRequest, match="soil_ec 25.0 mS/cm is outside the plausible range 0.0..20.0"):
        hub.push([batch("pi4", 2, "soil_ec", 25.0, "mS/cm")])
    # another node did not declare it: its reading of it is refused, naming that node
    hub.hello(hello("pizero"))
    with pytest.raises(BadRequest, match="not declared by pizero|neither built in nor declared by pizero"):
        hub.push([batch("pizero", 1, "soil_ec", 1.0, "mS/cm")])
    assert hub.store.count() == 1


def test_conflicting_declarations_are_refused_naming_both_nodes(hub):
    hub.hello(hello("pi4", EC))
    with pytest.raises(BadRequest, match="pizero and pi4 declare soil_ec differently"):
        hub.hello(hello("pizero", {**EC, "unit": "µS/cm", "high": 20000}))
    assert "pizero" not in hub.node_names()  # a refused hello changes nothing
    hub.hello(hello("pizero", {**EC, "high": 10.0}))  # same unit and class, its own range: fine
    with pytest.raises(BadRequest, match="10.5 mS/cm is outside the plausible range 0.0..10.0"):
        hub.push([batch("pizero", 1, "soil_ec", 10.5, "mS/cm")])
    assert hub.push([batch("pi4", 1, "soil_ec", 10.5, "mS/cm")])["acked"] == [1]
    with pytest.raises(BadRequest, match="cannot be redefined"):
        hub.hello(hello("pi5", {"name": "humidity", "unit": "g/m³", "low": 0, "high": 50}))


def test_a_node_may_change_its_own_declaration(hub):
    hub.hello(hello("pi4", EC))
    hub.hello(hello("pi4", {**EC, "unit": "µS/cm", "high": 20000}))  # no other node holds the name
    assert hub.quantities.lookup("soil_ec", "pi4").unit == "µS/cm"


def test_declarations_survive_a_hub_restart(tmp_path):
    first = Hub(Store(tmp_path / "hub.sqlite3"))
    first.hello(hello("pi4", EC))
    first.store.close()
    again = Hub(Store(tmp_path / "hub.sqlite3"))
    assert again.push([batch("pi4", 1, "soil_ec", 2.0, "mS/cm")])["acked"] == [1]
    again.store.close()


# -- config and manifests -------------------------------------------------------------------------
BASE = {"node": {"name": "pi4", "role": "spoke", "state_dir": "/tmp/x"}, "hub": {"host": "127.0.0.1"}}


def test_node_config_declares_quantities_and_config_check_explains_a_bad_one():
    cfg = parse_config({**BASE, "quantities": [EC]})
    assert [q.name for q in cfg.quantities] == ["soil_ec"]
    for bad, words in (([{**EC, "name": "temperature", "unit": "K"}], "cannot be redefined in 'K'"),
                       ([EC, EC], "declared twice"), ([{**EC, "low": 30}], "must be below high")):
        with pytest.raises(ConfigError, match=words):
            parse_config({**BASE, "quantities": bad})


def test_a_manifest_declares_what_its_sensor_reports():
    data = {"plugin": {"name": "probe", "version": "1"}, "sensor": {"quantities": ["soil_ec"]}, "quantities": [EC]}
    m = parse_manifest(data)
    assert m.sensor.quantities == ("soil_ec",) and m.declares[0].unit == "mS/cm"
    with pytest.raises(ManifestError, match="unknown quantity 'soil_ec': neither built in nor declared"):
        parse_manifest({"plugin": {"name": "probe", "version": "1"}, "sensor": {"quantities": ["soil_ec"]}})
    with pytest.raises(ManifestError, match="quantities\\[0\\].*name must match"):
        parse_manifest({**data, "quantities": [{**EC, "name": "Bad Name"}]})


# -- what follows downstream ------------------------------------------------------------------------
def test_the_dashboard_shows_a_declared_quantity_on_its_range(hub):
    hub.hello(hello("pi4", EC))
    node = {"name": "pi4", "role": "spoke", "online": True, "sensors": {"probe": {"soil_ec": {
        "value": 5.0, "unit": "mS/cm", "stale": False, "quality": "ok", "ts": 1.0, "reason": None}}}}
    rows = view._sections(node, None, hub.quantities.lookup)[0]["rows"]
    assert rows[0]["label"] == "Soil ec" and rows[0]["text"] == "5.0 mS/cm" and rows[0]["bar"] == 0.25
    assert rows[0]["title"] == "soil conductivity; range 0 to 20 mS/cm"


@pytest.mark.parametrize(("sensor", "words"), [
    ({"kind": "scd4x", "address": 0x61}, "sensors[0].address: must be 0x62 (98), got 97"),
    ({"kind": "sht4x", "model": "sht3x", "address": 0x46}, "an SHT3X answers at 0x44 or 0x45, not 0x46"),
    ({"kind": "bh1750", "bus": 300}, "sensors[0].bus: must be between 0 and 255"),
    ({"kind": "ads1115", "dry": 100, "wet": 100}, "sensors[0].wet: must differ from dry"),
    ({"kind": "ads1115", "gain": 3.3}, "sensors[0].gain: must be one of 6.144, 4.096"),
    ({"kind": "ds18b20", "device": "10-000000000001"}, "28- and 12 lowercase hex digits"),
])
def test_config_check_explains_a_wrong_address_bus_or_setting_in_one_line(sensor, words):
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, "sensors": [{"name": "s", **sensor}]})
    assert words in str(err.value) and len(str(err.value).splitlines()) == 1, str(err.value)
