"""PluginHost with the native backend: discovery, hot reload, quarantine, state, polling, alerts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from hal.context import HalContext
from plugins.host import BUNDLED_DIR, PluginHost, seed_bundled
from plugins.services import NodeServices, RecordingServices
from tests.plugins_fixtures import STEADY, Clock, manifest_toml, reading, write_plugin

REPO = Path(__file__).resolve().parents[2]
LOOP = "def evaluate(readings, host):\n    while True:\n        pass\n"


def versioned(v: str) -> str:
    return f"def evaluate(readings, host):\n    return {{'version': '{v}'}}\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "plugins"


def make_host(folder: Path, tmp_path: Path, clock: Clock | None = None, services: Any = None) -> PluginHost:
    return PluginHost("pi4", folder, "native", services or RecordingServices("pi4"), tmp_path / "state",
                      clock=clock or Clock())


def temps(host: PluginHost, value: float = 21.0) -> list[dict[str, Any]]:
    return host.evaluate([reading("temperature", value, host.clock())])


def by_name(outcomes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["plugin"]: o for o in outcomes}


def test_scan_loads_new_plugins_and_evaluates_them(folder: Path, tmp_path: Path) -> None:
    write_plugin(folder, "steady", STEADY, leds=[0])
    host = make_host(folder, tmp_path)
    assert host.scan()["loaded"] == ["steady"]
    out = by_name(temps(host))["steady"]
    assert out["ok"] and out["result"] == {"n": 1, "count": 1}
    assert out["actions"] == [{"action": "set_led", "node": None, "index": 0, "rgb": [0, 255, 0], "result": "ok"}]
    st = host.status("steady")
    assert st["state"] == "ok" and st["calls"] == 1 and st["backend"] == "native" and st["p50_ms"] is not None


def test_broken_edit_keeps_the_old_version_and_says_why(folder: Path, tmp_path: Path) -> None:
    path = write_plugin(folder, "p", versioned("1"))
    host = make_host(folder, tmp_path)
    host.scan()
    path.write_text("def evaluate(readings, host)\n    return {}\n")
    report = host.scan()
    assert "kept version 1.0 running" in report["failed"]["p"] and "SyntaxError" in report["failed"]["p"]
    assert by_name(temps(host))["p"]["result"] == {"version": "1"}
    st = host.status("p")
    assert st["state"] == "ok" and "SyntaxError" in st["reload_error"] and st["reload_failures"] == 1
    assert host.scan()["failed"] == {}  # the same broken file is not retried on every scan
    path.write_text(versioned("2"))
    assert host.scan()["reloaded"] == ["p"]
    assert by_name(temps(host))["p"]["result"] == {"version": "2"}
    assert host.status("p")["reload_error"] is None


def test_an_edit_failing_on_the_sample_is_refused(folder: Path, tmp_path: Path) -> None:
    path = write_plugin(folder, "p", versioned("1"))
    host = make_host(folder, tmp_path)
    host.scan()
    temps(host)  # the host keeps this batch as a sample
    path.write_text("def evaluate(readings, host):\n    return {'v': readings[0].value / 0}\n")
    report = host.scan()
    assert "ZeroDivisionError" in report["failed"]["p"]
    assert by_name(temps(host))["p"]["result"] == {"version": "1"}


def test_validation_on_a_sample_has_no_effects(folder: Path, tmp_path: Path) -> None:
    path = write_plugin(folder, "steady", STEADY, leds=[0])
    services = RecordingServices("pi4")
    host = make_host(folder, tmp_path, services=services)
    host.scan()
    temps(host)
    calls = len(services.calls)
    path.write_text(STEADY + "\n# edited\n")
    assert host.scan()["reloaded"] == ["steady"]
    assert len(services.calls) == calls  # the dry run set no LED
    assert by_name(temps(host))["steady"]["result"]["n"] == 2  # and did not count in state


def test_manifest_errors_keep_the_old_version(folder: Path, tmp_path: Path) -> None:
    write_plugin(folder, "p", versioned("1"))
    host = make_host(folder, tmp_path)
    host.scan()
    (folder / "p.toml").write_text('[plugin]\nname = "p"\nversion = "2"\n[limits]\ncall_ms = -5\n')
    assert "limits.call_ms" in host.scan()["failed"]["p"]
    assert host.status("p")["version"] == "1.0"


def test_touching_a_file_does_not_reload(folder: Path, tmp_path: Path) -> None:
    path = write_plugin(folder, "p", versioned("1"))
    host = make_host(folder, tmp_path)
    host.scan()
    os.utime(path, ns=(1, 1))
    assert host.scan() == {"loaded": [], "reloaded": [], "removed": [], "failed": {}}
    assert host.status("p")["reloads"] == 0


def test_removed_files_are_unloaded_and_their_alerts_cleared(folder: Path, tmp_path: Path) -> None:
    src = "def evaluate(readings, host):\n    host.raise_alert('a', 'm')\n    return None\n"
    path = write_plugin(folder, "p", src)
    services = RecordingServices("pi4")
    host = make_host(folder, tmp_path, services=services)
    host.scan()
    temps(host)
    path.unlink()
    assert host.scan()["removed"] == ["p"]
    assert host.names() == [] and temps(host) == []
    assert [(e["state"], e["message"]) for e in services.events] == [("raised", "m"), ("cleared", "plugin file removed")]


def test_same_name_as_py_and_wasm_is_a_problem(folder: Path, tmp_path: Path) -> None:
    write_plugin(folder, "p", versioned("1"))
    (folder / "p.wasm").write_bytes(b"\0asm")
    host = make_host(folder, tmp_path)
    assert "keep one" in host.scan()["failed"]["p"]


def test_native_time_limit_stops_a_loop_and_three_quarantine(folder: Path, tmp_path: Path) -> None:
    path = write_plugin(folder, "spin", LOOP, call_ms=50)
    write_plugin(folder, "steady", STEADY, leds=[0])
    services = RecordingServices("pi4")
    host = make_host(folder, tmp_path, services=services)
    host.scan()
    for i in range(3):
        out = by_name(temps(host))
        assert out["spin"]["kind"] == "timeout" and "50 ms" in out["spin"]["error"]
        assert out["steady"]["ok"] and out["steady"]["result"]["n"] == i + 1
    st = host.status("spin")
    assert st["state"] == "quarantined" and st["timeouts"] == 3
    assert "spin" not in by_name(temps(host))  # not run any more
    assert any(e["alert"] == "plugin.quarantined" and e["state"] == "raised" for e in services.events)
    assert host.reload("spin")["failed"] == {"spin": "quarantined until its file changes"}
    path.write_text(versioned("fixed"))
    assert host.scan()["reloaded"] == ["spin"]
    assert by_name(temps(host))["spin"]["result"] == {"version": "fixed"}
    assert any(e["alert"] == "plugin.quarantined" and e["state"] == "cleared" for e in services.events)


def test_traps_further_apart_than_the_window_do_not_quarantine(folder: Path, tmp_path: Path) -> None:
    write_plugin(folder, "spin", LOOP, call_ms=30)
    clock = Clock()
    host = make_host(folder, tmp_path, clock=clock)
    host.scan()
    for _ in range(4):
        assert by_name(temps(host))["spin"]["kind"] == "timeout"
        clock.advance(31)  # two traps per 60 s at most
    assert host.status("spin")["state"] == "error" and host.status("spin")["restarts"] == 4


def test_disable_is_remembered_and_clears_alerts(folder: Path, tmp_path: Path) -> None:
    write_plugin(folder, "p", "def evaluate(readings, host):\n    host.raise_alert('a', 'm')\n")
    host = make_host(folder, tmp_path)
    host.scan()
    temps(host)
    assert host.set_enabled("p", False)["state"] == "disabled"
    assert host.alerts.active() == [] and temps(host) == []
    again = make_host(folder, tmp_path)
    again.scan()
    assert again.status("p")["state"] == "disabled"
    again.set_enabled("p", True)
    assert by_name(temps(again))["p"]["ok"]


def test_state_and_raised_alerts_survive_a_node_restart(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    seed_bundled(folder)
    clock = Clock()
    services = RecordingServices("pi4")
    host = make_host(folder, tmp_path, clock, services)
    host.scan()
    for _ in range(3):
        host.evaluate([reading("temperature", 33.0, clock())])
        clock.advance(20)
    assert [e["state"] for e in services.events] == ["raised"]
    host.close()
    again = make_host(folder, tmp_path, clock, services)
    again.scan()
    out = by_name(again.evaluate([reading("temperature", 33.0, clock())]))["room_temperature"]
    assert out["result"]["level"] == "alert" and out["result"]["raised"] == []
    assert [e["state"] for e in services.events] == ["raised"]


def test_acknowledge_silences_the_buzzer_the_plugin_may_use(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    seed_bundled(folder)
    services = RecordingServices("pi4")
    clock = Clock()
    host = make_host(folder, tmp_path, clock, services)
    host.scan()
    host.evaluate([reading("cpu_temperature", 80.0, clock(), sensor="monitor")])
    clock.advance(25)
    out = by_name(host.evaluate([reading("cpu_temperature", 80.0, clock(), sensor="monitor")]))
    assert out["cpu_temperature"]["result"]["level"] == "alert" and ("beep", None, 3, 200) in services.calls
    events = host.acknowledge(plugin="cpu_temperature")
    assert [e["state"] for e in events] == ["acknowledged"] and ("silence", None) in services.calls
    clock.advance(200)  # past repeat_s: the plugin asks to beep again, the host keeps it quiet
    out = by_name(host.evaluate([reading("cpu_temperature", 80.0, clock(), sensor="monitor")]))
    assert [a["result"] for a in out["cpu_temperature"]["actions"] if a["action"] == "beep"] == \
        ["silenced: alert acknowledged"]


def test_plugin_sensor_polls_i2c_and_readings_are_validated(folder: Path, tmp_path: Path) -> None:
    src = textwrap.dedent('''
        def evaluate(readings, host):
            return None

        def poll(host):
            chip = host.i2c_read(1, 0x77, 0xD0, 1)[0]
            node = host.config.get("node")
            row = {"quantity": "temperature", "value": chip / 4, "ts": host.now()}
            return [dict(row, node=node)] if node else [row]
    ''')
    extra = '[sensor]\ninterval = 5\nquantities = ["temperature"]\n[permissions.nodes.x]\nleds = []\n'
    manifest = manifest_toml("chip", extra=extra).replace(
        "buzzer = false", 'buzzer = false\ni2c = [{ bus = 1, address = 0x77, mode = "r" }]')
    write_plugin(folder, "chip", src, manifest=manifest)
    hal = HalContext("mock", "pi4", tmp_path)
    clock = Clock()
    host = make_host(folder, tmp_path, clock, NodeServices("pi4", i2c_bus=hal.i2c_bus))
    host.scan()
    readings = host.poll_due()
    assert [(r.node, r.sensor, r.quantity, r.value) for r in readings] == [("pi4", "chip", "temperature", 0x61 / 4)]
    assert host.poll_due() == []  # not due again yet
    clock.advance(5)
    assert len(host.poll_due()) == 1
    (folder / "chip.toml").write_text(manifest.replace("[config]", "") + '[config]\nnode = "hub"\n')
    host.scan()
    out = host.poll("chip")
    assert not out["ok"] and "node must be 'pi4'" in out["error"]
    hal.close()


def test_evaluate_latest_is_a_dry_run_over_the_last_batches(folder: Path, tmp_path: Path) -> None:
    write_plugin(folder, "steady", STEADY, leds=[0])
    host = make_host(folder, tmp_path)
    host.scan()
    temps(host)
    out = host.evaluate_latest()
    assert len(out) == 1 and out[0]["dry_run"] and out[0]["result"]["n"] == 2
    assert by_name(temps(host))["steady"]["result"]["n"] == 2  # the dry run was not committed


def test_seed_bundled_copies_each_plugin_with_its_manifest(tmp_path: Path) -> None:
    names = seed_bundled(tmp_path / "p")
    assert names == ["air_quality", "cpu_temperature", "room_temperature"]
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(
        [f"{n}.py" for n in names] + [f"{n}.toml" for n in names])
    assert seed_bundled(tmp_path / "p") == []  # an existing folder is the operator's
    assert (BUNDLED_DIR / "room_temperature.py").read_text() == (tmp_path / "p" / "room_temperature.py").read_text()


def test_native_profile_never_imports_wasmtime(tmp_path: Path) -> None:
    script = textwrap.dedent(f'''
        import sys, json
        from pathlib import Path
        from plugins.host import PluginHost, seed_bundled
        from hal.readings import Reading
        folder = Path({str(tmp_path / "p")!r})
        seed_bundled(folder)
        host = PluginHost("pizero", folder, "native")
        report = host.scan()
        out = host.evaluate([Reading.measured("pizero", "monitor", "cpu_temperature", 50.0, 1e9)])
        print(json.dumps({{"loaded": report["loaded"], "ok": [o["ok"] for o in out],
                          "wasmtime": "wasmtime" in sys.modules}}))
    ''')
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"loaded": ["air_quality", "cpu_temperature", "room_temperature"], "ok": [True],
                      "wasmtime": False}
