"""`harvester plugins test` in the sandbox: results and actions as JSON; non-zero on trouble."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from actors.cli.main import main
from plugins.host import BUNDLED_DIR
from tests.plugins_fixtures import wasm_backend, write_plugin

__all__ = ["wasm_backend"]


@pytest.fixture
def readings(tmp_path: Path) -> Path:
    path = tmp_path / "readings.json"
    path.write_text(json.dumps([
        [{"node": "pi4", "sensor": "dht22", "quantity": "temperature", "value": 31.0, "ts": 1000}],
        [{"node": "pi4", "sensor": "dht22", "quantity": "temperature", "value": 31.4, "ts": 1031}],
    ]))
    return path


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    code = main(["plugins", "test", *args])
    out = capsys.readouterr()
    return code, json.loads(out.out) if out.out.strip() else {}, out.err


def test_sandboxed_test_of_a_bundled_plugin(readings: Path, capsys: pytest.CaptureFixture[str],
                                            wasm_backend: Any) -> None:
    code, report, err = run([str(BUNDLED_DIR / "room_temperature.py"), "--readings", str(readings)], capsys)
    assert code == 0, err
    assert report["backend"] == "wasm" and report["version"] == "1.0.0"
    first, second = report["evaluations"]
    assert first["result"]["colour"] == "amber" and second["result"]["colour"] == "red"
    assert [(a["action"], a.get("pattern")) for a in second["actions"]] == [("set_led", None), ("play", "alert")]
    assert report["alert_events"][0]["alert"] == "room_temperature.pi4.dht22"


@pytest.mark.parametrize("source,kind,message", [
    ("def evaluate(readings, host):\n    while True:\n        pass\n", "timeout", "exceeding its 100 ms limit"),
    ("def _w(c):\n    for s in type.__subclasses__(c):\n        yield s\n        yield from _w(s)\n"
     "def evaluate(readings, host):\n    f = next(c for c in _w(object) if c.__name__ == 'FileIO')\n"
     "    return {'x': f('/etc/hostname').read().decode()}\n", "trap", "system call"),
    ("def evaluate(readings, host):\n    host.set_led(4, 'red')\n", "error", "denied: LED 4"),
    ("def evaluate(readings, host):\n    return {'x': 1 / 0}\n", "error", "ZeroDivisionError"),
])
def test_sandboxed_test_exits_non_zero_with_a_clear_message(tmp_path: Path, readings: Path,
                                                            capsys: pytest.CaptureFixture[str], wasm_backend: Any,
                                                            source: str, kind: str, message: str) -> None:
    plugin = write_plugin(tmp_path / "p", "bad", source, call_ms=100)
    code, report, err = run([str(plugin), "--readings", str(readings)], capsys)
    assert code == 1
    assert report["evaluations"][0]["kind"] == kind
    assert f"bad.py: batch 1: {kind}: " in err and message in err


def test_sandboxed_test_of_a_plugin_that_cannot_load(tmp_path: Path, readings: Path,
                                                     capsys: pytest.CaptureFixture[str], wasm_backend: Any) -> None:
    plugin = write_plugin(tmp_path / "p", "net", "import socket\ndef evaluate(readings, host):\n    pass\n")
    code, report, err = run([str(plugin), "--readings", str(readings)], capsys)
    assert code == 1 and "cannot load" in err and "module 'socket' is not available" in report["error"]


@pytest.mark.parametrize("flags", [[], ["--native"]])
def test_a_plugin_error_is_shown_with_its_file_and_line(tmp_path: Path, readings: Path,
                                                       capsys: pytest.CaptureFixture[str], wasm_backend: Any,
                                                       flags: list[str]) -> None:
    """The sandbox once showed a syntax error as a trap in filesystem_preopens_get_directories."""
    plugin = write_plugin(tmp_path / "p", "bad", "def evaluate(readings, host)\n    return None\n")
    code, report, err = run([str(plugin), "--readings", str(readings), *flags], capsys)
    expected = "not loaded: SyntaxError: expected ':' (line 1, column 29) in bad.py"
    assert code == 1 and report["error"] == expected
    assert f"harvester plugins test: {plugin}: cannot load: {expected}" in err.splitlines()
    plugin = write_plugin(tmp_path / "p", "bad", "def evaluate(readings, host):\n    return {'r': 1 / 0}\n")
    code, report, err = run([str(plugin), "--readings", str(readings), *flags], capsys)
    expected = "ZeroDivisionError: division by zero (line 2 in evaluate) in bad.py"
    assert code == 1 and report["evaluations"][0]["error"] == expected
    assert f"harvester plugins test: {plugin}: batch 1: error: {expected}" in err.splitlines()
