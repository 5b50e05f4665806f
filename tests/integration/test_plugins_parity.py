"""The WASM and native backends give the same results on the bundled plugins, batch by batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hal.readings import Reading
from plugins.host import PluginHost, seed_bundled
from plugins.services import RecordingServices
from tests.plugins_fixtures import Clock, reading, wasm_backend, write_plugin

__all__ = ["wasm_backend"]


def script() -> list[tuple[float, list[tuple[str, str, float | None, str]]]]:
    """(seconds to advance, [(sensor, quantity, value, quality)]) — the alert table's edge cases."""
    t, c, iaq = "temperature", "cpu_temperature", "iaq"
    return [
        (0, [("dht22", t, 24.0, "ok")]),
        (10, [("dht22", t, 29.0, "ok")]),                 # amber: warn band
        (10, [("dht22", t, 31.0, "ok")]),                 # pending
        (20, [("dht22", t, 31.5, "ok")]),                 # held 20 s: not yet
        (15, [("dht22", t, 31.2, "ok")]),                 # held 35 s: fires
        (10, [("bme680", t, 22.0, "ok")]),                # another sensor: room LED stays red
        (10, [("dht22", t, 29.5, "ok")]),                 # hysteresis: still active
        (10, [("dht22", t, None, "unavailable")]),        # no data: still active
        (10, [("dht22", t, 28.0, "ok")]),                 # cleared
        (5, [("monitor", c, 70.5, "ok"), ("monitor", "cpu_load", 30.0, "ok")]),
        (5, [("monitor", c, 80.0, "ok")]),
        (25, [("monitor", c, 81.0, "ok")]),               # CPU fires, beeps
        (130, [("monitor", c, 81.0, "ok")]),              # repeat_s passed: beeps again
        (5, [("monitor", c, 70.0, "ok")]),                # cleared
        (5, [("bme680", iaq, 260.0, "calibrating")]),     # burn-in: never fires
        (70, [("bme680", iaq, 260.0, "calibrating")]),
        (5, [("bme680", iaq, 240.0, "ok")]),
        (65, [("bme680", iaq, 245.0, "ok")]),             # IAQ fires (no sound)
        (300, [("bme680", iaq, 190.0, "ok")]),            # stale sensor history, value still > high - hysteresis
        (5, [("bme680", iaq, 150.0, "ok")]),              # cleared
    ]


def run(profile: str, tmp: Path, backend: Any = None) -> dict[str, Any]:
    folder = tmp / profile / "plugins"
    seed_bundled(folder)
    clock = Clock()
    services = RecordingServices("pi4")
    host = PluginHost("pi4", folder, profile, services, tmp / profile / "state", clock, backend=backend)
    assert len(host.scan()["loaded"]) == 3
    steps = []
    for advance, rows in script():
        clock.advance(advance)
        batch: list[Reading] = [reading(q, v, clock(), sensor=s, quality=quality) for s, q, v, quality in rows]
        outcomes = host.evaluate(batch)
        steps.append([{k: o[k] for k in ("plugin", "version", "ok", "result", "error", "actions", "alerts",
                                         "denied")} for o in outcomes])
    host.close()
    return {"steps": steps, "calls": services.calls, "events": services.events}


def test_wasm_and_native_agree_on_the_bundled_plugins(tmp_path: Path, wasm_backend: Any) -> None:
    native = run("native", tmp_path)
    wasm = run("wasm", tmp_path, wasm_backend)
    for i, (n, w) in enumerate(zip(native["steps"], wasm["steps"], strict=True)):
        assert n == w, f"step {i}: native {n} != wasm {w}"
    assert native["calls"] == wasm["calls"] and native["events"] == wasm["events"]
    # and the script exercised what it meant to
    assert [(e["plugin"], e["state"]) for e in native["events"]] == [
        ("room_temperature", "raised"), ("room_temperature", "cleared"),
        ("cpu_temperature", "raised"), ("cpu_temperature", "cleared"),
        ("air_quality", "raised"), ("air_quality", "cleared")]
    assert [c for c in native["calls"] if c[0] in ("beep", "play")] == [
        ("play", None, "alert"), ("beep", None, 3, 200), ("beep", None, 3, 200)]
    assert all(o["ok"] for step in native["steps"] for o in step)


SENSOR = '[sensor]\ninterval = 5\nquantities = ["temperature"]\n'


# (source, where it fails, the report both backends must give: type, message, file and line)
PLUGIN_ERRORS = {
    "syntax_error_at_load": (
        "LIMIT = 30\ndef evaluate(readings, host)\n    return None\n", "load",
        "SyntaxError: expected ':' (line 2, column 29) in broken.py"),
    "name_error_at_load": (
        "LIMIT = 30\nHIGH = LIMTI + 5\ndef evaluate(readings, host):\n    return None\n", "load",
        "NameError: name 'LIMTI' is not defined (line 2 in <module>) in broken.py"),
    "zero_division_in_evaluate": (
        "def ratio(v):\n    return v / 0\n\ndef evaluate(readings, host):\n"
        "    return {'r': ratio(len(readings))}\n", "evaluate",
        "ZeroDivisionError: division by zero (line 2 in ratio) in broken.py"),
    "key_error_in_poll": (
        "def evaluate(readings, host):\n    return None\n\ndef poll(host):\n"
        "    return [{'value': host.config['scale']}]\n", "poll",
        "KeyError: 'scale' (line 5 in poll) in broken.py"),
    "multi_line_message": (
        "def evaluate(readings, host):\n    raise ValueError('first\\nERROR forged line')\n", "evaluate",
        "ValueError: first\\nERROR forged line (line 2 in evaluate) in broken.py"),
}


def plugin_error(profile: str, tmp: Path, source: str, stage: str, backend: Any = None) -> dict[str, Any]:
    """What a node reports for a broken plugin: its error text, kind and trap count."""
    folder = tmp / profile / "plugins"
    write_plugin(folder, "broken", source, extra=SENSOR if stage == "poll" else "")
    clock = Clock()
    host = PluginHost("pi4", folder, profile, RecordingServices("pi4"), tmp / profile / "state", clock,
                      backend=backend)
    try:
        report = host.scan()
        if stage == "load":
            status = host.status("broken")
            return {"error": report["failed"]["broken"], "kind": status["last_error_kind"], "traps": status["traps"]}
        assert report["loaded"] == ["broken"], report
        if stage == "evaluate":
            outcome = host.evaluate([reading("temperature", 21.0, clock())])[0]
        else:
            outcome = host.poll("broken")
        assert not outcome["ok"]
        return {"error": outcome["error"], "kind": outcome["kind"], "traps": host.status("broken")["traps"]}
    finally:
        host.close()


@pytest.mark.parametrize("case", sorted(PLUGIN_ERRORS))
def test_wasm_and_native_report_a_plugin_error_alike(tmp_path: Path, wasm_backend: Any, case: str) -> None:
    """The sandbox used to trap on a syntax error (CPython opened the file named in compile())."""
    source, stage, expected = PLUGIN_ERRORS[case]
    native = plugin_error("native", tmp_path, source, stage)
    wasm = plugin_error("wasm", tmp_path, source, stage, wasm_backend)
    assert wasm == native
    want = f"not loaded: {expected}" if stage == "load" else expected
    assert native == {"error": want, "kind": "load" if stage == "load" else "error", "traps": 0}
