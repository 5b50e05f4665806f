"""The host API: grants checked at the call, effects applied only after a good call, on real mock devices."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from hal.buzzer import BuzzerDevice
from hal.context import HalContext
from hal.leds import COLOURS, LedStrip, MemoryPixels
from plugins.alerts import AlertBook
from plugins.hostapi import HostApi, HostRefusal, PluginEnv
from plugins.manifest import parse_manifest
from plugins.services import BuzzerCommands, NodeServices, RecordingServices
from plugins.state import MAX_VALUE_BYTES, PluginState


class Rig:
    """A node's devices (in-memory strip, mock-pin buzzer, emulated I2C bus) and one plugin's API."""

    def __init__(self, tmp: Path, factory: MockFactory, permissions: dict[str, Any]) -> None:
        self.pixels = MemoryPixels(count=11)
        self.strip = LedStrip(self.pixels)
        self.buzzer = BuzzerDevice(17, factory)
        self.hal = HalContext("mock", "pi4", tmp)
        self.events: list[dict[str, Any]] = []
        self.remote_calls: list[tuple[Any, ...]] = []
        rig = self

        class Remote:
            def set_pixel(self, index: int, r: int, g: int, b: int) -> None:
                rig.remote_calls.append(("set_pixel", index, r, g, b))

        self.services = NodeServices("pi4", self.strip, BuzzerCommands(self.buzzer), self.hal.i2c_bus, self.events.append,
                                     remote=lambda node: Remote())
        self.alerts = AlertBook("pi4", self.services.alert, time.time)
        self.state = PluginState(tmp / "state.json")
        self.env = PluginEnv("p", self.services, self.state, self.alerts)
        manifest = parse_manifest({"plugin": {"name": "p", "version": "1"}, "permissions": permissions})
        self.api = HostApi(self.env, manifest)

    @property
    def bus(self) -> Any:
        return self.hal.i2c_bus(1).bus  # the EmulatedBus under the retrying layer

    def call(self, fn: Any, commit: bool = True, dry_run: bool = False) -> Any:
        """Run `fn(api)` as one plugin call; returns the call context."""
        self.api.begin("evaluate", dry_run)
        try:
            fn(self.api)
        finally:
            ctx = self.api.end(commit)
        return ctx


@pytest.fixture
def rig(tmp_path: Path, factory: MockFactory) -> Iterator[Rig]:
    r = Rig(tmp_path, factory, {"leds": [1, 2], "buzzer": True, "i2c": [{"bus": 1, "address": 0x77, "mode": "r"}],
                                "nodes": {"pi5": {"leds": [4]}}})
    yield r
    r.buzzer.close()
    r.hal.close()


def test_granted_led_is_shown_after_the_call(rig: Rig) -> None:
    frames = rig.pixels.shown
    ctx = rig.call(lambda api: api.set_led(None, 1, (255, 0, 0)))
    assert rig.strip.pixel(1) == COLOURS["red"]
    assert rig.pixels.shown == frames + 1
    assert ctx.actions[0]["result"] == "ok"


def test_led_outside_the_grant_is_refused_counted_and_never_shown(rig: Rig) -> None:
    frames = rig.pixels.shown

    def plugin(api: HostApi) -> None:
        with pytest.raises(HostRefusal, match="denied: LED 5 on this node is not granted") as err:
            api.set_led(None, 5, (255, 0, 0))
        assert err.value.denied

    ctx = rig.call(plugin)
    assert ctx.denied and rig.env.counts["denied"] == 1
    assert rig.pixels.shown == frames and rig.strip.pixel(5) == (0, 0, 0)


def test_another_nodes_led_needs_a_grant_for_that_node(rig: Rig) -> None:
    rig.call(lambda api: api.set_led("pi5", 4, (0, 255, 0)))
    assert rig.remote_calls == [("set_pixel", 4, 0, 255, 0)]
    with pytest.raises(HostRefusal, match="node pi5"):
        rig.call(lambda api: api.set_led("pi5", 1, (0, 255, 0)))
    with pytest.raises(HostRefusal, match="node other"):
        rig.call(lambda api: api.set_led("other", 1, (0, 255, 0)))
    assert len(rig.remote_calls) == 1


def test_naming_its_own_node_is_the_local_strip(rig: Rig) -> None:
    rig.call(lambda api: api.set_led("pi4", 2, (0, 0, 255)))
    assert rig.strip.pixel(2) == (0, 0, 255) and rig.remote_calls == []


def test_effects_of_a_failed_call_are_dropped(rig: Rig) -> None:
    def plugin(api: HostApi) -> None:
        api.set_led(None, 1, (255, 0, 0))
        api.beep(None, 2, 100)
        api.state_set("k", "v")
        api.raise_alert({"id": "a", "severity": "warning", "message": "m"})

    rig.call(plugin, commit=False)
    assert rig.strip.pixel(1) == (0, 0, 0) and rig.buzzer.state()["beeps"] == 0
    assert rig.state.get("k") is None and rig.alerts.active() == [] and rig.events == []


def test_a_dry_run_changes_nothing_but_sees_its_own_state(rig: Rig) -> None:
    rig.state.commit({"k": "old"})

    def plugin(api: HostApi) -> None:
        api.state_set("k", "new")
        assert api.state_get("k") == "new"
        api.set_led(None, 1, (255, 0, 0))

    rig.call(plugin, dry_run=True)
    assert rig.state.get("k") == "old" and rig.strip.pixel(1) == (0, 0, 0)


def test_buzzer_grant_and_arguments(rig: Rig, tmp_path: Path, factory: MockFactory) -> None:
    rig.call(lambda api: api.play(None, "alert"))
    assert rig.buzzer.state()["last_command"]["command"] == "play"
    with pytest.raises(HostRefusal, match="unknown buzzer pattern"):
        rig.call(lambda api: api.play(None, "siren"))
    with pytest.raises(HostRefusal, match="count 1..20"):
        rig.call(lambda api: api.beep(None, 99, 100))
    with pytest.raises(HostRefusal, match="as integers, got 2, 100.0"):  # the buzzer actor takes ints only
        rig.call(lambda api: api.beep(None, 2, 100.0))
    quiet = Rig(tmp_path / "q", factory.__class__(pin_class=MockPWMPin), {"leds": [1]})
    with pytest.raises(HostRefusal, match="denied: the buzzer on this node is not granted"):
        quiet.call(lambda api: api.beep(None, 1, 100))
    assert quiet.buzzer.state()["beeps"] == 0
    quiet.buzzer.close()


def test_i2c_read_of_a_granted_address(rig: Rig) -> None:
    got: list[bytes] = []
    rig.call(lambda api: got.append(api.i2c_read(1, 0x77, 0xD0, 1)))
    assert got == [b"\x61"]  # the BME680 chip id


def test_i2c_outside_the_grant_never_reaches_the_bus(rig: Rig) -> None:
    before = rig.bus.transactions
    with pytest.raises(HostRefusal, match="denied: I2C: I2C address 0x76 on bus 1 is not granted"):
        rig.call(lambda api: api.i2c_read(1, 0x76, 0xD0, 1))
    with pytest.raises(HostRefusal, match="denied: .*read-only"):
        rig.call(lambda api: api.i2c_write(1, 0x77, 0xE0, b"\xb6"))
    assert rig.bus.transactions == before and rig.env.counts["denied"] == 2


def test_state_limits_are_errors_not_crashes(rig: Rig) -> None:
    with pytest.raises(HostRefusal, match="at most"):
        rig.call(lambda api: api.state_set("k", "x" * (MAX_VALUE_BYTES + 1)))


@pytest.mark.parametrize("alert,message", [
    ({"id": "Bad Id", "severity": "warning", "message": "m"}, "alert ids match"),
    ({"id": "a", "severity": "loud", "message": "m"}, "severity"),
    ({"id": "a", "severity": "info", "message": "m", "value": float("inf")}, "finite"),
    ({"id": "a", "severity": "info", "message": "m", "node": "../etc"}, "alert node"),
])
def test_bad_alerts_are_refused(rig: Rig, alert: dict[str, Any], message: str) -> None:
    with pytest.raises(HostRefusal, match=message):
        rig.call(lambda api: api.raise_alert(alert))


def test_alert_events_and_acknowledgement_silence_the_plugins_beeps(rig: Rig) -> None:
    rig.call(lambda api: api.raise_alert({"id": "hot", "severity": "warning", "message": "hot", "value": 31.0}))
    rig.call(lambda api: api.raise_alert({"id": "hot", "severity": "warning", "message": "hot"}))  # no-op
    assert [e["state"] for e in rig.events] == ["raised"]
    assert rig.events[0]["node"] == "pi4" and rig.events[0]["raised_by"] == "pi4"
    rig.alerts.acknowledge("hot")
    ctx = rig.call(lambda api: api.beep(None, 1, 100))
    assert ctx.actions[0]["result"].startswith("silenced") and rig.buzzer.state()["beeps"] == 0
    rig.call(lambda api: api.clear_alert("hot", "cool again", 25.0))
    assert [e["state"] for e in rig.events] == ["raised", "acknowledged", "cleared"]
    rig.call(lambda api: api.beep(None, 1, 100))
    assert rig.buzzer.state()["beeps"] == 1


def test_an_unchanged_led_is_not_written_again(rig: Rig) -> None:
    rig.call(lambda api: api.set_led(None, 1, (255, 0, 0)))
    frames = rig.pixels.shown
    ctx = rig.call(lambda api: api.set_led(None, 1, (255, 0, 0)))
    assert ctx.actions[0]["result"] == "unchanged" and rig.pixels.shown == frames


def test_a_device_failure_is_the_actions_result(rig: Rig) -> None:
    rig.strip.close(clear=False)
    ctx = rig.call(lambda api: api.set_led(None, 1, (255, 0, 0)))
    assert ctx.actions[0]["result"].startswith("error: DeviceUnavailable")
    assert rig.env.counts["apply_errors"] == 1 and "set_led" in rig.env.last_apply_error


def test_host_functions_outside_a_call_are_refused(rig: Rig) -> None:
    with pytest.raises(HostRefusal, match="only available during"):
        rig.api.set_led(None, 1, (1, 2, 3))


def test_logs_are_capped_per_call(rig: Rig) -> None:
    def plugin(api: HostApi) -> None:
        for _ in range(50):
            api.log("info", "x")
        with pytest.raises(HostRefusal, match="log limit"):
            api.log("info", "one too many")

    rig.call(plugin)


def test_recording_services_record_in_order() -> None:
    services = RecordingServices("n")
    services.set_led(None, 1, 1, 2, 3)
    services.beep("pi4", 2, 100)
    assert services.calls == [("set_led", None, 1, (1, 2, 3)), ("beep", "pi4", 2, 100)]


def test_long_alert_messages_are_clipped_to_what_the_hub_accepts(rig: Rig) -> None:
    rig.call(lambda api: api.raise_alert({"id": "a", "severity": "info", "message": "x" * 2000}))
    assert len(rig.events[0]["message"]) == 500 and rig.events[0]["message"].endswith("…")
