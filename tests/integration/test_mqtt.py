"""The fleet in Home Assistant by MQTT discovery, against a real Mosquitto on a loopback port.

One demo-shaped fleet (hub + pi4 + pizero, in this process) publishes through the hub's bridge
for the whole module; each test leaves it as it found it (broker running, every node online).
The discovery payloads are checked field by field against Home Assistant's documented MQTT
schema (sensor, light with the JSON schema, siren, button, device, availability) and its
device class / unit rules as encoded below."""

from __future__ import annotations

import json
import logging
import math
import random
import re
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from actors.hub.mqtt import MqttBridge
from hal.buzzer import MAX_COUNT, MAX_MS, MIN_MS
from tests.helpers import HOST, wait_for
from tests.integration.conftest import Cluster
from tests.mqtt_broker import SKIP_REASON, Mosquitto, Subscriber, have_mosquitto

pytestmark = pytest.mark.skipif(not have_mosquitto(), reason=SKIP_REASON)

PREFIX, BASE = "homeassistant", "harvester"
LEDS = 11  # write_node_config's strip, as the demo's pi4
MONITOR = ("cpu_temperature", "cpu_load", "memory_used", "memory_total", "memory_percent", "uptime")
BME680 = ("temperature", "humidity", "pressure", "gas_resistance", "iaq")
# The demo fleet's sensors (actors/cli/demo_configs), at test speed. The network sensor reports
# one sensor per target, `network-hub` for the link every spoke watches to the hub.
HUB_SENSORS = [{"name": "monitor", "kind": "monitor", "interval": 1.0}]
PI4_SENSORS = [{"name": "dht22", "kind": "dht22", "interval": 0.5},
               {"name": "bme680", "kind": "bme680", "interval": 1.0, "bus": 1, "address": 0x77},
               {"name": "monitor", "kind": "monitor", "interval": 1.0}]
PIZERO_SENSORS = [{"name": "bme680", "kind": "bme680", "interval": 1.0, "bus": 1, "address": 0x77},
                  {"name": "monitor", "kind": "monitor", "interval": 1.0},
                  {"name": "network", "kind": "network", "interval": 1.0}]
EXPECTED: dict[str, dict[str, tuple[str, ...]]] = {
    "hub": {"monitor": MONITOR},
    "pi4": {"dht22": ("temperature", "humidity"), "bme680": BME680, "monitor": MONITOR},
    "pizero": {"bme680": BME680, "monitor": MONITOR, "network-hub": ("rtt", "packet_loss")},
}
NODES = tuple(EXPECTED)
# What each quantity is measured in, and Home Assistant's device class for it (None: no class;
# gas resistance and IAQ have none in Home Assistant, which is what ESPHome publishes for them).
UNIT = {"temperature": "°C", "humidity": "%", "pressure": "hPa", "gas_resistance": "Ω", "iaq": "IAQ",
        "cpu_temperature": "°C", "cpu_load": "%", "memory_used": "MB", "memory_total": "MB", "memory_percent": "%",
        "uptime": "s", "rtt": "ms", "packet_loss": "%"}
DEVICE_CLASS = {"temperature": "temperature", "humidity": "humidity", "pressure": "atmospheric_pressure",
                "cpu_temperature": "temperature", "uptime": "duration", "rtt": "duration"}
# Home Assistant's sensor rules (homeassistant/components/sensor/const.py DEVICE_CLASS_UNITS):
# a sensor with one of these device classes must be in one of these units, or it is refused.
_PRESSURE = {"cbar", "bar", "hPa", "mmHg", "inHg", "inH₂O", "kPa", "mbar", "Pa", "psi"}
HA_UNITS: dict[str, set[str]] = {
    "temperature": {"°C", "°F", "K"},
    "humidity": {"%"},
    "moisture": {"%"},
    "battery": {"%"},
    "atmospheric_pressure": _PRESSURE,
    "pressure": _PRESSURE | {"mPa"},
    "carbon_dioxide": {"ppm"},
    "carbon_monoxide": {"ppm"},
    "illuminance": {"lx"},
    "duration": {"d", "h", "min", "s", "ms", "μs"},
    "voltage": {"V", "mV", "µV", "kV", "MV"},
    "current": {"A", "mA"},
    "signal_strength": {"dB", "dBm"},
    "volatile_organic_compounds": {"µg/m³", "mg/m³"},
    "pm25": {"µg/m³"},
    "pm10": {"µg/m³"},
}
LEVEL = re.compile(r"[A-Za-z0-9_-]+\Z")
CONFIG_TOPIC = re.compile(rf"{PREFIX}/(sensor|light|siren|button)/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/config\Z")


def expected_configs() -> set[str]:
    """Every discovery topic the demo fleet must have retained."""
    out = set()
    for node, sensors in EXPECTED.items():
        for sensor, quantities in sensors.items():
            out |= {f"{PREFIX}/sensor/{node}/{sensor}_{q}/config" for q in quantities}
        out |= {f"{PREFIX}/button/{node}/ack_alerts/config", f"{PREFIX}/sensor/{node}/active_alerts/config"}
    out |= {f"{PREFIX}/light/pi4/led_{i}/config" for i in range(LEDS)}
    out |= {f"{PREFIX}/siren/pi4/buzzer/config", f"{PREFIX}/button/pi4/beep/config"}
    return out


def is_number(text: str | None) -> bool:
    try:
        return text is not None and math.isfinite(float(text))
    except ValueError:
        return False


def state_ok(config_topic: str, text: str | None) -> bool:
    """A sensor's state is a number; a round-trip time may be "None" (Home Assistant's unknown)
    while every probe is lost."""
    return is_number(text) or (config_topic.endswith("_rtt/config") and text == "None")


@dataclass
class Fleet:
    cluster: Cluster
    broker: Mosquitto
    sub: Subscriber
    plugins: str  # an empty plugins folder: no bundled plugin lights LEDs or raises alerts

    @property
    def bridge(self) -> MqttBridge:
        return next(s for s in self.cluster.hub.attached if isinstance(s, MqttBridge))

    def actor(self, node: str, name: str) -> Any:
        return next(a for a in self.cluster.agents[node].actors if a.name == name)

    def configs(self) -> dict[str, dict[str, Any]]:
        """Every discovery config retained now (as the subscriber saw it last), parsed."""
        return {t: json.loads(m.payload) for t, m in self.sub.latest(lambda t: t.startswith(f"{PREFIX}/")
                                                                     and t.endswith("/config")).items()}

    def start_pizero(self) -> None:
        self.cluster.start_node("pizero", profile="native", sensors=PIZERO_SENSORS, extra=self.plugins)

    def everything_published(self) -> bool:
        """Every config, the bridge online, every node available and a value on every state topic."""
        configs = self.configs()
        if not expected_configs() <= set(configs):
            return False
        if self.sub.text(self.bridge.status_topic) != "online":
            return False
        if any(self.sub.text(f"{BASE}/{n}/availability") != "online" for n in NODES):
            return False
        return all(state_ok(t, self.sub.text(c["state_topic"])) for t, c in configs.items()
                   if t.startswith(f"{PREFIX}/sensor/") and "active_alerts" not in t) and \
            not self.dark_lights(configs)

    def dark_lights(self, configs: dict[str, dict[str, Any]]) -> list[str]:
        """Light configs whose state is not published yet: the bridge reads a strip after announcing its lights."""
        return [t for t, c in configs.items()
                if t.startswith(f"{PREFIX}/light/") and self.sub.text(c["state_topic"]) is None]

    def missing(self) -> str:
        configs = self.configs()
        return (f"configs missing {sorted(expected_configs() - set(configs))[:5]}; lights without a state "
                f"{self.dark_lights(configs)[:5]}; status {self.sub.text(self.bridge.status_topic)!r}; "
                f"availability { {n: self.sub.text(f'{BASE}/{n}/availability') for n in NODES} }")

    def wait_published(self, what: str) -> None:
        try:
            wait_for(self.everything_published, timeout=60, interval=0.2, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {self.missing()}") from None


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, broker: Mosquitto) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    (tmp / "no-plugins").mkdir()
    plugins = f'[plugins]\ndir = "{tmp / "no-plugins"}"\n'
    mqtt = f'[mqtt]\nhost = "{HOST}"\nport = {broker.port}\nkeepalive = 5\n'
    sub = broker.subscriber(f"{PREFIX}/#", f"{BASE}/#")
    cluster = Cluster(tmp)
    try:
        cluster.start_node("hub", "hub", sensors=HUB_SENSORS, extra=plugins + mqtt)
        wait_for(lambda: cluster.hub.registrar.sweeps > 0, what="hub registered its names")
        cluster.start_node("pi4", sensors=PI4_SENSORS, leds=True, buzzer=True,
                           extra=plugins + "[mock]\nroom_seed = 1\n")
        f = Fleet(cluster, broker, sub, plugins)
        f.start_pizero()
        f.wait_published("the demo fleet's discovery configs, availability and states on the broker")
        yield f
    finally:
        cluster.stop()
        sub.close()


# -- a. discovery ------------------------------------------------------------------------------
def check_device(device: dict[str, Any], node: str) -> None:
    assert device["identifiers"] == [f"harvester_{node}"]
    assert device["name"] == node
    assert device["manufacturer"] == "Harvester"
    assert isinstance(device["model"], str) and device["model"].startswith("Harvester ")
    assert isinstance(device["sw_version"], str) and device["sw_version"]
    assert re.fullmatch(r"http://[^/\s]+:\d+/", device["configuration_url"]), device["configuration_url"]
    if node == "hub":
        assert "via_device" not in device
    else:
        assert device["via_device"] == "harvester_hub"


def check_common(config: dict[str, Any], node: str, status_topic: str) -> None:
    assert isinstance(config["name"], str) and config["name"]
    assert LEVEL.match(config["unique_id"]) and LEVEL.match(config["object_id"])
    assert config["object_id"].startswith(f"{node}_")
    assert config["availability"] == [{"topic": status_topic}, {"topic": f"{BASE}/{node}/availability"}]
    assert config["availability_mode"] == "all"
    check_device(config["device"], node)
    for key in ("state_topic", "command_topic"):
        if key in config:
            assert all(LEVEL.match(level) for level in config[key].split("/")), config[key]
            assert config[key].startswith(f"{BASE}/{node}/")


def check_expire_after(fleet: Fleet, node: str, sensor: str, config: dict[str, Any]) -> None:
    """A sensor's value expires in Home Assistant when the hub would call it stale: the limit
    its node sent in hello (a network target, `network-hub`, has its sensor's, `network`)."""
    expire = config.get("expire_after")
    assert isinstance(expire, int) and not isinstance(expire, bool) and expire > 0, config
    limits = fleet.cluster.hub.role.hub.node_infos({node})[node]["info"]["stale_after"]
    assert expire == max(1, round(limits[sensor.split("-", 1)[0]])), (config["state_topic"], expire, limits)


def test_discovery_of_the_demo_fleet_matches_home_assistants_schema(fleet: Fleet) -> None:
    configs = fleet.configs()
    status_topic = fleet.bridge.status_topic
    # the bridge's own status (its last will says offline): one topic under the base for the fleet
    assert status_topic.startswith(f"{BASE}/") and status_topic.endswith("/status")
    assert all(LEVEL.match(level) for level in status_topic.split("/")), status_topic
    assert expected_configs() <= set(configs)
    for topic in configs:
        assert CONFIG_TOPIC.match(topic), topic
    ours = {t: c for t, c in configs.items() if t in expected_configs()}
    unique_ids = [c["unique_id"] for c in ours.values()]
    assert len(unique_ids) == len(set(unique_ids)), Counter(unique_ids).most_common(3)
    object_ids = [c["object_id"] for c in ours.values()]
    assert len(object_ids) == len(set(object_ids))
    for topic, config in ours.items():
        component, node, object_id = CONFIG_TOPIC.match(topic).groups()
        check_common(config, node, status_topic)
        assert config["object_id"] == f"{node}_{object_id}"
        assert config["unique_id"] == f"harvester_{node}_{object_id}"
        assert config["device"] == ours[f"{PREFIX}/button/{node}/ack_alerts/config"]["device"]  # one device a node
        if component == "sensor" and object_id != "active_alerts":
            sensor, quantity = next((s, q) for s, qs in EXPECTED[node].items() for q in qs
                                    if object_id == f"{s}_{q}")
            assert config["name"] == f"{sensor} {quantity.replace('_', ' ')}"
            assert config["state_topic"] == f"{BASE}/{node}/{sensor}/{quantity}"
            assert config["state_class"] == "measurement"
            assert config["unit_of_measurement"] == UNIT[quantity], (topic, config)
            assert config.get("device_class") == DEVICE_CLASS.get(quantity), (topic, config)
            if "device_class" in config:
                assert config["unit_of_measurement"] in HA_UNITS[config["device_class"]], (topic, config)
            check_expire_after(fleet, node, sensor, config)
            state = fleet.sub.text(config["state_topic"])
            assert state_ok(topic, state), (topic, state)
        elif component == "sensor":
            assert config["state_topic"] == f"{BASE}/{node}/alerts/count"
            assert config["state_class"] == "measurement" and "device_class" not in config
            assert fleet.sub.text(config["state_topic"]) == "0"
        elif component == "light":
            i = int(object_id.removeprefix("led_"))
            assert config["schema"] == "json"
            assert config["supported_color_modes"] == ["rgb"]
            assert config["brightness"] is True and config.get("brightness_scale", 255) == 255
            assert config["command_topic"] == f"{BASE}/{node}/leds/{i}/set"
            assert config["state_topic"] == f"{BASE}/{node}/leds/{i}/state"
            assert json.loads(fleet.sub.text(config["state_topic"]))["state"] in ("ON", "OFF")
        elif component == "siren":
            assert config["command_topic"] == f"{BASE}/{node}/buzzer/set"
        else:
            assert component == "button"
            assert config["command_topic"] in (f"{BASE}/{node}/buzzer/beep", f"{BASE}/{node}/alerts/ack")
            assert config["payload_press"] == "PRESS"
    # the sw_version is what each node said in its hello
    for node in NODES:
        version = fleet.cluster.hub.role.hub.node_infos({node})[node]["info"]["version"]
        assert ours[f"{PREFIX}/button/{node}/ack_alerts/config"]["device"]["sw_version"] == str(version)
    # everything the bridge publishes is retained, so a Home Assistant starting later sees it
    late = fleet.broker.subscriber(f"{PREFIX}/#", f"{BASE}/#")
    try:
        wanted = expected_configs() | {status_topic} | {f"{BASE}/{n}/availability" for n in NODES} | \
            {c["state_topic"] for c in ours.values() if "state_topic" in c}
        # a topic counts once the broker handed it over retained: a live update that follows
        # (the hub's own sensors publish every few seconds) arrives unflagged, as it should
        def retained() -> set[str]:
            return {t for t in wanted if any(m.retain and m.payload for m in late.history(t))}

        try:
            wait_for(lambda: wanted <= retained(), timeout=30,
                     what="a new subscriber to get every config, status, availability and state retained")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; missing {sorted(wanted - retained())[:5]}") from None
        assert all(json.loads(late.last(t).payload) == ours[t] for t in expected_configs())
        assert late.text(status_topic) == "online"
        assert all(late.text(f"{BASE}/{n}/availability") == "online" for n in NODES)
    finally:
        late.close()


def test_network_target_sensors_expire_after_their_sensors_limit(fleet: Fleet) -> None:
    configs = fleet.configs()
    for quantity in EXPECTED["pizero"]["network-hub"]:
        config = configs[f"{PREFIX}/sensor/pizero/network-hub_{quantity}/config"]
        check_expire_after(fleet, "pizero", "network-hub", config)


# -- b. a value change -------------------------------------------------------------------------
def test_a_value_change_reaches_the_state_topic(fleet: Fleet) -> None:
    config = fleet.configs()[f"{PREFIX}/sensor/pi4/dht22_temperature/config"]
    room = fleet.cluster.agents["pi4"].hal.room
    room.pin(temperature=33.3)  # the DHT22 reports 0.1 °C steps: 33.3 exactly
    try:
        wait_for(lambda: is_number(v := fleet.sub.text(config["state_topic"])) and abs(float(v) - 33.3) < 1e-6,
                 timeout=30, what=f"33.3 on {config['state_topic']}")
    finally:
        room.pin(temperature=None)


# -- c. a light command --------------------------------------------------------------------------
def light(fleet: Fleet, index: int, body: dict[str, Any], pixel: list[int], state: dict[str, Any]) -> None:
    """Send one light command; wait until the LED has `pixel` and its state topic says `state`."""
    config = fleet.configs()[f"{PREFIX}/light/pi4/led_{index}/config"]
    leds = fleet.actor("pi4", "leds")
    fleet.sub.publish(config["command_topic"], json.dumps(body))
    wait_for(lambda: leds.state()["pixels"][index] == pixel, timeout=20, what=f"LED {index} at {pixel}")
    wait_for(lambda: json.loads(fleet.sub.text(config["state_topic"]) or "{}") == state, timeout=20,
             what=f"{config['state_topic']} saying {state}")


def test_a_light_command_turns_led_3_blue_and_back(fleet: Fleet) -> None:
    blue = {"r": 0, "g": 0, "b": 255}
    light(fleet, 3, {"state": "ON", "color": blue}, [0, 0, 255],
          {"state": "ON", "color_mode": "rgb", "brightness": 255, "color": blue})
    # brightness scales the colour on the strip; the state gives back the colour and the brightness
    light(fleet, 3, {"state": "ON", "color": blue, "brightness": 128}, [0, 0, 128],
          {"state": "ON", "color_mode": "rgb", "brightness": 128, "color": blue})
    light(fleet, 3, {"state": "OFF"}, [0, 0, 0], {"state": "OFF"})


def test_a_brightness_only_command_keeps_the_leds_colour(fleet: Fleet) -> None:
    blue = {"r": 0, "g": 0, "b": 255}
    try:
        light(fleet, 4, {"state": "ON", "color": blue}, [0, 0, 255],
              {"state": "ON", "color_mode": "rgb", "brightness": 255, "color": blue})
        leds = fleet.actor("pi4", "leds")
        fleet.sub.publish(f"{BASE}/pi4/leds/4/set", json.dumps({"state": "ON", "brightness": 128}))
        wait_for(lambda: leds.state()["pixels"][4] != [0, 0, 255], what="LED 4 changed")
        assert leds.state()["pixels"][4] == [0, 0, 128]
    finally:
        fleet.sub.publish(f"{BASE}/pi4/leds/4/set", '{"state": "OFF"}')
        wait_for(lambda: fleet.actor("pi4", "leds").state()["pixels"][4] == [0, 0, 0], what="LED 4 off again")


# -- e. Home Assistant's birth message -----------------------------------------------------------
def test_home_assistants_birth_message_republishes_the_configs(fleet: Fleet, broker: Mosquitto) -> None:
    topic = f"{PREFIX}/sensor/pi4/dht22_humidity/config"
    before = fleet.sub.last(topic)
    assert before is not None and before.payload
    fleet.sub.publish(topic, b"", retain=True)  # the retained config deleted, as a user clearing the broker does
    wait_for(lambda: fleet.sub.last(topic).payload == b"", what="the deleted config echoed")
    fleet.sub.publish(f"{PREFIX}/status", "online")
    wait_for(lambda: fleet.sub.last(topic).payload == before.payload, timeout=20,
             what="the config published again after Home Assistant's birth message")
    late = broker.subscriber(topic)  # and retained: a client subscribing now gets it
    try:
        wait_for(lambda: (m := late.last(topic)) is not None and m.retain and m.payload == before.payload,
                 timeout=10, what="the republished config retained")
    finally:
        late.close()


# -- g. fuzzed commands ----------------------------------------------------------------------------
class Spy:
    """Wraps pi4's LED and buzzer actors' remote methods: every call the bridge makes is checked
    against the actor's own rules (index within the strip, channels 0..255 integers, beep count
    and length in range) before it goes on."""

    def __init__(self, leds: Any, buzzer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.invalid: list[tuple[str, tuple[Any, ...], dict[str, Any], str]] = []
        self._lock = threading.Lock()
        self.length = len(leds.state()["pixels"])
        for actor, name, rule in ((leds, "set_pixel", self._pixel), (leds, "fill", self._fill),
                                  (leds, "set_named", self._named), (leds, "brightness", self._brightness),
                                  (leds, "clear", self._none), (buzzer, "beep", self._beep),
                                  (buzzer, "on", self._none), (buzzer, "off", self._none),
                                  (buzzer, "silence", self._none), (buzzer, "play", self._play),
                                  (buzzer, "mute", self._mute)):
            monkeypatch.setattr(actor, name, self._wrap(f"{actor.name}.{name}", getattr(actor, name), rule))

    def _wrap(self, name: str, method: Callable[..., Any], rule: Callable[..., str | None]) -> Callable[..., Any]:
        def spy(*args: Any, **kwargs: Any) -> Any:
            try:
                problem = rule(*args, **kwargs)
            except TypeError as exc:
                problem = f"wrong arity: {exc}"
            with self._lock:
                self.calls.append((name, args, kwargs))
                if problem:
                    self.invalid.append((name, args, kwargs, problem))
            return method(*args, **kwargs)
        spy._pyroExposed = True  # type: ignore[attr-defined]  (Pyro5 dispatches to it as to the original)
        return spy

    @staticmethod
    def _int(v: Any, low: int, high: int) -> bool:
        return type(v) is int and low <= v <= high

    def _channels(self, *rgb: Any) -> str | None:
        return None if len(rgb) == 3 and all(self._int(c, 0, 255) for c in rgb) else f"channels {rgb!r}"

    def _pixel(self, index: Any, r: Any, g: Any, b: Any) -> str | None:
        if not self._int(index, 0, self.length - 1):
            return f"index {index!r} on a strip of {self.length}"
        return self._channels(r, g, b)

    def _fill(self, r: Any, g: Any, b: Any) -> str | None:
        return self._channels(r, g, b)

    def _named(self, index: Any, colour: Any) -> str | None:
        ok = self._int(index, 0, self.length - 1) and isinstance(colour, str) and 0 < len(colour) <= 32
        return None if ok else f"set_named({index!r}, {colour!r})"

    @staticmethod
    def _brightness(value: Any = None) -> str | None:
        ok = value is None or (type(value) in (int, float) and 0 <= value <= 1)
        return None if ok else f"brightness {value!r}"

    @staticmethod
    def _none() -> str | None:
        return None

    def _beep(self, count: Any = 1, duration_ms: Any = 200, tone_hz: Any = None) -> str | None:
        if not self._int(count, 1, MAX_COUNT) or not self._int(duration_ms, MIN_MS, MAX_MS) or tone_hz is not None:
            return f"beep({count!r}, {duration_ms!r}, {tone_hz!r})"
        return None

    @staticmethod
    def _play(pattern: Any) -> str | None:
        return None if pattern in ("alert", "warning", "critical", "confirm") else f"pattern {pattern!r}"

    @staticmethod
    def _mute(muted: Any = True) -> str | None:
        return None if type(muted) is bool else f"mute {muted!r}"


BRIDGE_TOPIC = re.compile(rf"{BASE}/[^/]*/(leds/[^/]*/set|buzzer/set|buzzer/beep|alerts/ack)\Z")
NASTY_NUMBERS: list[Any] = [-1, 256, 1000, 2**31, 2**64, 10**30, -(10**30), 1.5, 255.0, 0.0, -0.0, "255", "0x10",
                            True, False, None, [], {}, [255], {"v": 1}]
NASTY_JSON = ['{"state": "ON"', "{state: ON}", "[1, 2", "nul", '{"state": "ON",}', "{'state': 'ON'}", "ON}",
              '{"state": "ON", "color": {"r": NaN, "g": 0, "b": 0}}', '{"state": "ON", "brightness": NaN}',
              '{"state": "ON", "brightness": Infinity}', '{"state": "ON", "brightness": 1e400}',
              '{"state": "ON", "color": {"r": 1e400, "g": 0, "b": 0}}', '{"state": "ON", "duration": NaN}',
              '{"state": "ON", "duration": -Infinity}', '{"state": "ON", "duration": 1e400}',
              "[" * 100_000 + "]" * 100_000, "{" * 5000, '{"a":' * 50_000 + "1" + "}" * 50_000,
              '"ON"', "null", "1", "true", "[]", "{}", '{"state": "ON"}' * 3, "\ufeff{\"state\": \"ON\"}"]
WORDS = ["ON", "OFF", "on", "off", "On", "TOGGLE", "", " ", "ON\x00", "ＯＮ", "PRESS", "press", "PRESS\n", "Press",
         "PRESSED", "1", "true", "null", "\xff\xfe"]


def fuzz_topic(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.05:  # under the base, but no command of the bridge's: it never hears them
        return f"{BASE}/" + rng.choice(["pi4/leds/3/set/x", "pi4/buzzer/play", "pi4/leds/set", "pi4/leds/3",
                                        "pi4/buzzer", "pi4/alerts/ack/now", "pi4/leds/3/state/set", "set"])
    if roll < 0.55:  # the light, siren, beep and ack of pi4
        return rng.choice([f"{BASE}/pi4/leds/{rng.randrange(LEDS)}/set", f"{BASE}/pi4/buzzer/set",
                           f"{BASE}/pi4/buzzer/beep", f"{BASE}/pi4/alerts/ack"])
    if roll < 0.8:  # LED indexes the strip does not have, or that are not numbers
        index = rng.choice(["11", "12", "99", "1023", "1024", "99999", "-1", "3.0", "1e3", "0x3", "abc", "",
                            "03", "00000000003", "٣", "²", "Ⅲ", "3 ", "%33", "\u0663\u0663", "9" * 40])
        return f"{BASE}/pi4/leds/{index}/set"
    node = rng.choice(["nosuch", "PI4", "pi4_", "pi5", "hub", "pizero", "..", "%70i4", "pi4\u200b", "x" * 200, ""])
    return f"{BASE}/{node}/" + rng.choice(["leds/3/set", "buzzer/set", "buzzer/beep", "alerts/ack", "leds/0/set"])


def fuzz_payload(rng: random.Random) -> bytes:
    roll = rng.randrange(9)
    if roll == 0:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 3, 17, 200, 4000])))
    if roll == 1:
        return rng.choice(NASTY_JSON).encode("utf-8", "surrogatepass")
    if roll == 2:  # light commands with wrong types and out-of-range values
        colour: Any = {k: rng.choice([*NASTY_NUMBERS, rng.randrange(256)]) for k in rng.sample("rgbxw", 3)}
        body = {"state": "ON", "color": rng.choice([colour, colour, [0, 0, 255], "blue", 255, None]),
                "brightness": rng.choice([*NASTY_NUMBERS, rng.randrange(256)])}
        return json.dumps({k: v for k, v in body.items() if rng.random() < 0.8}).encode()
    if roll == 3:  # wrong states, in JSON and bare
        word = rng.choice([*WORDS, *NASTY_NUMBERS])
        return json.dumps({"state": word}).encode() if rng.random() < 0.5 else str(word).encode("utf-8", "replace")
    if roll == 4:  # siren durations
        return json.dumps({"state": rng.choice(["ON", "OFF", "on"]),
                           "duration": rng.choice([*NASTY_NUMBERS, 0, 5, 5.0001, 1e-9, 1e308])}).encode()
    if roll == 5:  # nested junk
        junk: Any = rng.choice(NASTY_NUMBERS)
        for _ in range(rng.randrange(1, 30)):
            junk = rng.choice([[junk], {"state": junk}, {"color": junk}, {"r": junk, "g": 0, "b": 0}])
        return json.dumps({"state": "ON", "color": junk}).encode()
    if roll == 6:  # huge
        return rng.choice([b"ON" * 200_000, json.dumps({"state": "ON", "pad": "x" * 300_000}).encode(),
                           b"9" * 100_000])
    if roll == 7:  # unknown keys beside a valid command
        return json.dumps({"state": "ON", "color": {"r": 1, "g": 2, "b": 3, "w": 4}, "effect": "rainbow",
                           "transition": rng.choice(NASTY_NUMBERS), "flash": "long"}).encode()
    # a valid command now and then, so the storm also carries work the actors must do
    return rng.choice([json.dumps({"state": "ON", "color": {"r": rng.randrange(256), "g": rng.randrange(256),
                                                            "b": rng.randrange(256)},
                                   "brightness": rng.randrange(256)}).encode(),
                       b'{"state": "OFF"}', b"PRESS", b"OFF", json.dumps({"state": "ON", "duration": 0.05}).encode()])


def test_500_fuzzed_commands_never_reach_an_actor_with_a_bad_argument(fleet: Fleet, monkeypatch, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="actors.hub.mqtt")
    bridge = fleet.bridge
    spy = Spy(fleet.actor("pi4", "leds"), fleet.actor("pi4", "buzzer"), monkeypatch)
    assert spy.length == LEDS
    rng = random.Random(20240611)
    handled0 = bridge.commands_done + bridge.commands_refused
    refused0 = bridge.commands_refused
    sent: list[tuple[str, bytes]] = []
    delivered = 0

    def handled() -> int:
        return bridge.commands_done + bridge.commands_refused - handled0

    for _ in range(500):
        topic, payload = fuzz_topic(rng), fuzz_payload(rng)
        sent.append((topic, payload))
        if BRIDGE_TOPIC.match(topic):
            delivered += 1
            # the bridge's queue holds 100 commands (more are dropped, by design): keep it half full
            if delivered - handled() > 50:
                wait_for(lambda n=delivered: n - handled() <= 10, timeout=60, interval=0.02,
                         what="the bridge to work through the queue")
        fleet.sub.publish(topic, payload)
    wait_for(lambda: handled() >= delivered, timeout=60, interval=0.05,
             what=f"the bridge to take all {delivered} commands it subscribes to")
    assert handled() == delivered
    refused = bridge.commands_refused - refused0
    assert not spy.invalid, f"{len(spy.invalid)} actor calls with invalid arguments, e.g. {spy.invalid[:5]}"
    assert spy.calls, "no fuzzed command was valid: the storm did not exercise the actors"
    assert refused > delivered // 2, (refused, delivered)
    # the log is not flooded: one warning per topic and kind of failure a minute at most
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "actors.hub.mqtt" and r.levelno >= logging.WARNING]
    # "ignored a command on <topic>: ..." / "a command on <topic> failed: ..."
    per_topic = Counter(m.split(" on ", 1)[1].split(": ", 1)[0].removesuffix(" failed")
                        for m in warnings if " on " in m)
    assert max(per_topic.values(), default=0) <= 2, per_topic.most_common(3)
    topics = {t for t, _ in sent if BRIDGE_TOPIC.match(t)}
    assert len(warnings) <= 2 * len(topics) + 2, (len(warnings), len(topics))
    # afterwards everything still works: a valid command, the bridge's threads, the hub's API
    monkeypatch.undo()
    fleet.sub.publish(f"{BASE}/pi4/buzzer/set", "OFF")
    green = {"r": 0, "g": 255, "b": 0}
    light(fleet, 7, {"state": "ON", "color": green}, [0, 255, 0],
          {"state": "ON", "color_mode": "rgb", "brightness": 255, "color": green})
    light(fleet, 7, {"state": "OFF"}, [0, 0, 0], {"state": "OFF"})
    assert bridge.connected
    assert all(t.is_alive() for t in bridge._threads)
    assert bridge._net is not None and bridge._net.is_alive()
    with urllib.request.urlopen(fleet.cluster.url("/api/readings"), timeout=10) as res:
        assert {n["name"] for n in json.loads(res.read())["nodes"]} >= set(NODES)
    print(f"fuzz: {len(sent)} sent, {delivered} to the bridge's topics, {refused} refused, "
          f"{len(spy.calls)} actor calls, {len(warnings)} warnings over {len(topics)} topics")


# -- d. the broker restarted -----------------------------------------------------------------------
def test_a_broker_restart_mid_run_then_full_recovery(fleet: Fleet, broker: Mosquitto) -> None:
    bridge, store = fleet.bridge, fleet.cluster.hub.role.hub.store
    broker.stop()  # persistence off: every retained config, state and availability is gone with it
    wait_for(lambda: not bridge.connected, timeout=30, what="the bridge to notice the broker is gone")
    stored = store.count()
    wait_for(lambda: store.count() > stored + 20, timeout=30, what="readings landing at the hub meanwhile")
    fleet.sub.clear()
    broker.start()  # the same port
    fleet.wait_published("every config, the bridge online, every node available and fresh states after the restart")
    assert bridge.connected
    # fresh readings, not only the republished ones
    topic = f"{BASE}/pi4/dht22/temperature"
    count = len(fleet.sub.history(topic))
    wait_for(lambda: len(fleet.sub.history(topic)) > count, timeout=20, what=f"a new value on {topic}")
    red = {"r": 255, "g": 0, "b": 0}
    light(fleet, 5, {"state": "ON", "color": red}, [255, 0, 0],
          {"state": "ON", "color_mode": "rgb", "brightness": 255, "color": red})
    light(fleet, 5, {"state": "OFF"}, [0, 0, 0], {"state": "OFF"})


# -- f. a node offline -------------------------------------------------------------------------------
def test_a_node_offline_at_the_hub_shows_unavailable(fleet: Fleet) -> None:
    topic = f"{BASE}/pizero/availability"
    assert fleet.sub.text(topic) == "online"
    fleet.cluster.stop_node("pizero")
    try:
        # Bounded by the hub's online rule (pushed within 3 push intervals: 1.5 s here; the hub's
        # probe of the stopped agent may say so sooner) plus the bridge's 1 s tick.
        wait_for(lambda: fleet.sub.text(topic) == "offline", timeout=30, what=f"{topic} saying offline")
        configs = fleet.configs()
        assert configs[f"{PREFIX}/sensor/pizero/bme680_temperature/config"]  # its entities stay
        assert fleet.sub.text(f"{BASE}/pi4/availability") == "online"
    finally:
        fleet.start_pizero()
    wait_for(lambda: fleet.sub.text(topic) == "online", timeout=30, what=f"{topic} online again")


# -- h. a hub holding more than a thousand descriptors --------------------------------------------
def test_the_bridge_works_on_a_descriptor_above_1023(broker: Mosquitto, tmp_path) -> None:
    """A hub keeps a connection per spoke, so a broker (re)connect can get a descriptor select()
    cannot watch; paho's own loop waits in select(), the bridge's network loop does not."""
    import os
    import resource

    from actors.hub.state import Hub
    from actors.hub.store import Store
    from actors.node.config import MqttConfig

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the open-files limit ({hard}) leaves no descriptor above 1023")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    sub = Subscriber(HOST, broker.port, ("lowfd/#",)).start()  # paho's own loop: its socket must stay low
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # as a thousand spokes' connections
    hub = Hub(Store(tmp_path / "hub.sqlite3"))
    bridge = MqttBridge(MqttConfig(HOST, broker.port, base_topic="lowfd", client_id="harvester-highfd"), hub, "hub",
                        lambda *a, **k: None)
    try:
        bridge.start()
        wait_for(lambda: bridge.connected, timeout=20, what="the bridge connected")
        assert bridge.client.socket().fileno() > 1023
        wait_for(lambda: sub.text("lowfd/bridge/status") == "online", timeout=20, what="the bridge's status")
        hub.hello({"node": "sp1", "push_interval": 1.0})
        hub.push([{"node": "sp1", "seq": 1, "readings": [
            {"sensor": "dht22", "quantity": "temperature", "value": 21.5, "unit": "°C", "ts": time.time()}]}])
        wait_for(lambda: sub.text("lowfd/sp1/dht22/temperature") == "21.5", timeout=20,
                 what="a reading published over the high descriptor")
    finally:
        bridge.stop()
        sub.close()
        hub.store.close()
        for fd in held:
            os.close(fd)
