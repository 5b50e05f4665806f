"""The plugin SDK (plugins/guest/harvester_plugin.py): rules, loading, calling — through a fake port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from hal.leds import COLOURS
from plugins.sdk import load_sdk

sdk = load_sdk()


class FakePort:
    """An in-memory port: what a plugin asked the node for, in order."""

    def __init__(self, now: float = 1000.0, leds: tuple[int, ...] = (1,)) -> None:
        self.now_value = now
        self.leds = leds
        self.state: dict[str, str] = {}
        self.calls: list[tuple[Any, ...]] = []

    def now(self) -> float:
        self.calls.append(("now",))
        return self.now_value

    def log(self, level: str, message: str) -> None:
        self.calls.append(("log", level, message))

    def set_led(self, node: str, index: int, rgb: tuple[int, int, int]) -> None:
        if index not in self.leds:
            raise sdk.host_error(f"denied: LED {index}")
        self.calls.append(("set_led", node, index, rgb))

    def beep(self, node: str, count: int, on_ms: int) -> None:
        self.calls.append(("beep", node, count, on_ms))

    def play(self, node: str, pattern: str) -> None:
        self.calls.append(("play", node, pattern))

    def state_get(self, key: str) -> str | None:
        self.calls.append(("state_get", key))
        return self.state.get(key)

    def state_set(self, key: str, value: str | None) -> None:
        self.calls.append(("state_set", key))
        if value is None:
            self.state.pop(key, None)
        else:
            self.state[key] = value

    def raise_alert(self, alert: dict[str, Any]) -> None:
        self.calls.append(("raise", alert["id"], alert["value"]))

    def clear_alert(self, alert_id: str, message: str, value: float | None) -> None:
        self.calls.append(("clear", alert_id, value))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == kind]


def batch(value: float | None, ts: float, quality: str = "ok", sensor: str = "dht22") -> list[Any]:
    return [sdk.Reading("pi4", sensor, "temperature", value, "°C", ts, quality if value is not None else "unavailable",
                        None if value is not None else "no answer")]


def rule(port: FakePort, **kw: Any) -> Any:
    host = sdk.Host(port, "room", {})
    settings = {"high": 30.0, "hysteresis": 1.0, "hold_s": 30.0, "stale_after_s": 120.0, "warn": 28.0, **kw}
    return sdk.ThresholdRule(host, "room", "temperature", **settings), host


def step(port: FakePort, r: Any, value: float | None, quality: str = "ok", age: float = 0.0,
         sensor: str = "dht22") -> dict[str, Any]:
    r.host._begin_call(False)
    return r.update(batch(value, port.now_value - age, quality, sensor))


def test_sdk_colours_match_the_led_table() -> None:
    assert sdk.COLOURS == COLOURS


def test_rule_fires_only_after_the_hold_time() -> None:
    port = FakePort()
    r, _ = rule(port)
    assert step(port, r, 31.0)["level"] == "warn"  # pending
    port.now_value += 29
    assert step(port, r, 31.0)["raised"] == []
    port.now_value += 1
    out = step(port, r, 31.0)
    assert out["level"] == "alert" and [e["id"] for e in out["raised"]] == ["room.pi4.dht22"]
    assert port.of("raise") == [("raise", "room.pi4.dht22", 31.0)]


def test_rule_dip_below_threshold_restarts_the_hold() -> None:
    port = FakePort()
    r, _ = rule(port)
    step(port, r, 31.0)
    port.now_value += 20
    step(port, r, 29.0)
    port.now_value += 20
    assert step(port, r, 31.0)["raised"] == []  # the hold restarts here
    port.now_value += 29
    assert step(port, r, 31.0)["raised"] == []
    port.now_value += 1
    assert step(port, r, 31.0)["raised"]


def test_rule_hysteresis_keeps_the_alert_until_clearly_below() -> None:
    port = FakePort()
    r, _ = rule(port, hold_s=0)
    assert step(port, r, 31.0)["raised"]
    assert step(port, r, 29.5)["level"] == "alert"  # below 30 but not below 29
    assert step(port, r, 30.5)["raised"] == []  # no second raise while active
    out = step(port, r, 28.9)
    assert [e["id"] for e in out["cleared"]] == ["room.pi4.dht22"] and out["level"] == "warn"
    assert port.of("clear") == [("clear", "room.pi4.dht22", 28.9)]


@pytest.mark.parametrize("quality,age,value", [("calibrating", 0, 35.0), ("ok", 500, 35.0), ("ok", 0, None)])
def test_rule_never_fires_on_stale_calibrating_or_missing_data(quality: str, age: float, value: float | None) -> None:
    port = FakePort()
    r, _ = rule(port, hold_s=0)
    out = step(port, r, value, quality=quality, age=age)
    assert out["level"] == "unknown" and out["raised"] == []
    assert port.of("raise") == []


def test_rule_bad_data_resets_a_pending_hold_but_not_an_alert() -> None:
    port = FakePort()
    r, _ = rule(port)
    step(port, r, 31.0)
    port.now_value += 25
    step(port, r, 31.0, quality="calibrating")
    port.now_value += 10
    assert step(port, r, 31.0)["raised"] == []  # the hold started again
    port.now_value += 30
    assert step(port, r, 31.0)["raised"]
    assert step(port, r, None)["level"] == "alert"  # an unreadable sensor does not clear it
    assert port.of("clear") == []


def test_rule_state_survives_a_new_instance() -> None:
    port = FakePort()
    r, _ = rule(port, hold_s=0)
    step(port, r, 31.0)
    r2, _ = rule(port, hold_s=0)  # a reload: new interpreter, same host state
    out = step(port, r2, 31.0)
    assert out["level"] == "alert" and out["raised"] == [] and len(port.of("raise")) == 1


def test_rule_tracks_sensors_separately_and_reports_the_worst() -> None:
    port = FakePort()
    r, _ = rule(port, hold_s=0)
    assert step(port, r, 31.0, sensor="dht22")["level"] == "alert"
    out = step(port, r, 22.0, sensor="bme680")
    assert out["level"] == "alert" and out["raised"] == []  # dht22 still alerting
    assert set(out["sensors"]) == {"pi4.dht22", "pi4.bme680"}


def test_rule_ignores_batches_without_its_quantity() -> None:
    port = FakePort()
    r, host = rule(port)
    host._begin_call(False)
    assert r.update([sdk.Reading("pi4", "monitor", "cpu_load", 5.0, "%", 1000.0)]) is None
    assert port.calls == []


def test_alert_row_sets_the_led_and_sounds_once_then_on_repeat() -> None:
    port = FakePort()
    host = sdk.Host(port, "room", {"high": 30, "hold_s": 0, "led": 1, "repeat_s": 60})

    def run(value: float) -> dict[str, Any]:
        host._begin_call(False)
        return sdk.run_alert_row(batch(value, port.now_value), host, "room", "temperature",
                                 on_raise=lambda h, node: h.play("alert", node=node))

    assert run(25.0)["colour"] == "green"
    assert run(31.0)["colour"] == "red"
    port.now_value += 20
    run(31.0)
    assert len(port.of("play")) == 1 and len(port.of("set_led")) == 2  # unchanged colour not resent yet
    port.now_value += 41
    run(31.0)
    assert len(port.of("play")) == 2  # on raise, then once repeat_s later
    red = COLOURS["red"]
    assert [c[3] for c in port.of("set_led")] == [COLOURS["green"], red, red]  # resent after LED_RESEND_S


def test_alert_row_reports_actuator_refusals_and_still_alerts() -> None:
    port = FakePort(leds=())
    host = sdk.Host(port, "room", {"high": 30, "hold_s": 0, "led": 1})
    host._begin_call(False)
    out = sdk.run_alert_row(batch(31.0, port.now_value), host, "room", "temperature")
    assert out["problems"] == ["denied: LED 1"]
    assert port.of("raise")


def load(source: str, port: FakePort | None = None, config: dict[str, Any] | None = None) -> Any:
    runtime = sdk.Runtime(port or FakePort())
    runtime.load("t", source, json.dumps(config or {}))
    return runtime


def request(readings: list[Any], dry_run: bool = False) -> str:
    return json.dumps({"readings": [r.to_dict() for r in readings], "dry_run": dry_run})


def test_runtime_calls_evaluate_and_encodes_its_result() -> None:
    rt = load("def evaluate(readings, host):\n    return {'n': len(readings), 'high': host.config['high']}\n",
              config={"high": 30})
    assert json.loads(rt.evaluate(request(batch(20.0, 1.0)))) == {"n": 1, "high": 30}


@pytest.mark.parametrize("source,message", [
    ("import socket\ndef evaluate(r, h):\n    pass\n", "module 'socket' is not available"),
    ("import subprocess\ndef evaluate(r, h):\n    pass\n", "module 'subprocess' is not available"),
    ("from ctypes import CDLL\ndef evaluate(r, h):\n    pass\n", "module 'ctypes' is not available"),
    ("def evaluate(r, h):\n    pass\nopen('/etc/passwd')\n", "NameError"),
    ("def evaluate(r, h)\n    pass\n", "SyntaxError"),
    ("x = 1\n", "defines no evaluate"),
])
def test_runtime_refuses_bad_plugin_files(source: str, message: str) -> None:
    with pytest.raises(sdk.PluginFailure, match=message):
        load(source)


def test_runtime_reports_the_plugin_line_of_an_error() -> None:
    rt = load("def evaluate(readings, host):\n    x = 1\n    return {'v': 1 / 0}\n")
    with pytest.raises(sdk.PluginFailure, match=r"ZeroDivisionError: division by zero \(line 3 in evaluate\)"):
        rt.evaluate(request([]))


@pytest.mark.parametrize("body,message", [
    ("return [1, 2]", "must return a dict or None"),
    ("return {'x': float('nan')}", "ValueError"),
    ("return {'x': 'y' * 20000}", "limit is 16384"),
])
def test_runtime_rejects_bad_results(body: str, message: str) -> None:
    rt = load(f"def evaluate(readings, host):\n    {body}\n")
    with pytest.raises(sdk.PluginFailure, match=message):
        rt.evaluate(request([]))


def test_runtime_print_goes_to_the_host_log() -> None:
    port = FakePort()
    rt = load("def evaluate(readings, host):\n    print('hello', 42)\n", port)
    rt.evaluate(request([]))
    assert ("log", "info", "hello 42") in port.calls


def test_runtime_drops_its_caches_after_a_dry_run_or_a_failure() -> None:
    port = FakePort()
    src = ("def evaluate(readings, host):\n    host.state_set('k', host.state_get('k', 0) + 1)\n"
           "    host.set_led(1, 'red')\n    return {'k': host.state_get('k')}\n")
    rt = load(src, port)
    rt.evaluate(request([], dry_run=True))
    port.state.clear()  # the host discarded the dry run's write
    assert json.loads(rt.evaluate(request([]))) == {"k": 1}
    assert len(port.of("set_led")) == 2  # re-sent after the dry run
    rt.evaluate(request([]))
    assert len(port.of("set_led")) == 2 and len(port.of("state_get")) == 2  # cached while committed


def test_a_syntax_error_names_the_plugin_file_line_and_column() -> None:
    with pytest.raises(sdk.PluginFailure) as err:
        load("x = 1\ndef evaluate(r, h)\n    pass\n")
    assert str(err.value) == "SyntaxError: expected ':' (line 2, column 19) in t.py"


def test_an_error_at_load_names_the_plugin_file_and_line() -> None:
    with pytest.raises(sdk.PluginFailure) as err:
        load("x = 1\ny = missing + x\ndef evaluate(r, h):\n    pass\n")
    assert str(err.value) == "NameError: name 'missing' is not defined (line 2 in <module>) in t.py"


def test_the_compile_guard_covers_compiling_the_plugin_and_nothing_else() -> None:
    """The sandbox's guard refuses file opens; the plugin's own code must never run under it."""
    port = FakePort()

    @contextmanager
    def guard() -> Iterator[None]:
        port.calls.append(("guard", "enter"))
        yield
        port.calls.append(("guard", "exit"))

    runtime = sdk.Runtime(port, compile_guard=guard)
    runtime.load("t", "print('module body')\ndef evaluate(r, h):\n    print('call')\n", "{}")
    runtime.evaluate(request([]))
    assert port.calls == [("guard", "enter"), ("guard", "exit"), ("log", "info", "module body"),
                          ("log", "info", "call")]


def test_an_error_report_is_one_line_and_bounded_whatever_the_plugin_raises() -> None:
    rt = load("def evaluate(readings, host):\n    raise ValueError('one\\ntwo\\u2028' + 'x' * 5000)\n")
    with pytest.raises(sdk.PluginFailure) as err:
        rt.evaluate(request([]))
    text = str(err.value)
    assert text.startswith("ValueError: one\\ntwo\\u2028xxx") and text.endswith("… (line 2 in evaluate) in t.py")
    assert len(text) == len("ValueError: ") + sdk.MAX_ERROR_TEXT + len(" (line 2 in evaluate) in t.py")
    assert text.isprintable()


def test_an_exception_whose_str_fails_is_still_reported() -> None:
    src = ("class Odd(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\n"
           "def evaluate(readings, host):\n    raise Odd()\n")
    rt = load(src)
    with pytest.raises(sdk.PluginFailure) as err:
        rt.evaluate(request([]))
    assert str(err.value) == "Odd: <the message could not be formatted> (line 5 in evaluate) in t.py"


def test_a_syntax_error_the_plugin_raises_itself_is_located_by_its_frame() -> None:
    rt = load("def evaluate(readings, host):\n    raise SyntaxError('made up')\n")
    with pytest.raises(sdk.PluginFailure) as err:
        rt.evaluate(request([]))
    assert str(err.value) == "SyntaxError: made up (line 2 in evaluate) in t.py"
