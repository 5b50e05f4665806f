"""The WASM and native backends give the same results on the bundled plugins, batch by batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hal.readings import Reading
from plugins.host import PluginHost, seed_bundled
from plugins.services import RecordingServices
from tests.plugins_fixtures import Clock, reading, wasm_backend

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
