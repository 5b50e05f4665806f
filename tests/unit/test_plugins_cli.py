"""`harvester plugins new` and `harvester plugins test --native`: scaffolds, exit codes, messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors.cli.main import main
from plugins.host import BUNDLED_DIR
from tests.plugins_fixtures import write_plugin


def readings_file(tmp: Path, batches: list[list[dict]]) -> Path:
    path = tmp / "readings.json"
    path.write_text(json.dumps(batches))
    return path


def test_new_scaffolds_a_plugin_that_loads_and_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "new", "garage", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "garage.py").exists() and (tmp_path / "garage.toml").exists()
    capsys.readouterr()
    path = readings_file(tmp_path, [[{"quantity": "temperature", "value": 22.0, "ts": 100}]])
    assert main(["plugins", "test", str(tmp_path / "garage.py"), "--readings", str(path), "--native"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["evaluations"][0]["result"]["colour"] == "green"


def test_new_refuses_to_overwrite_and_bad_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "new", "garage", "--dir", str(tmp_path)]) == 0
    assert main(["plugins", "new", "garage", "--dir", str(tmp_path)]) == 2
    assert "not overwriting" in capsys.readouterr().err
    assert main(["plugins", "new", "Bad-Name", "--dir", str(tmp_path)]) == 2


def test_native_test_of_a_bundled_plugin_prints_results_and_actions(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = readings_file(tmp_path, [
        [{"node": "pi4", "sensor": "monitor", "quantity": "cpu_temperature", "value": 80.0, "ts": 1000}],
        [{"node": "pi4", "sensor": "monitor", "quantity": "cpu_temperature", "value": 80.5, "ts": 1021}],
    ])
    code = main(["plugins", "test", str(BUNDLED_DIR / "cpu_temperature.py"), "--readings", str(path), "--native"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    last = report["evaluations"][-1]
    assert last["result"]["level"] == "alert"
    assert [a["action"] for a in last["actions"]] == ["set_led", "beep"]
    assert report["alert_events"][0]["state"] == "raised" and report["backend"] == "native"


def test_a_denied_call_exits_non_zero_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = ("from harvester_plugin import HostDenied\ndef evaluate(readings, host):\n    try:\n"
           "        host.set_led(9, 'red')\n    except HostDenied:\n        pass\n    return {}\n")
    plugin = write_plugin(tmp_path / "p", "sneaky", src, leds=[1])
    path = readings_file(tmp_path, [[{"quantity": "temperature", "value": 22.0}]])
    assert main(["plugins", "test", str(plugin), "--readings", str(path), "--native"]) == 1
    err = capsys.readouterr().err
    assert "denied call: LED 9 on this node is not granted (granted: 1)" in err


@pytest.mark.parametrize("content,message", [
    ("{}", "expected a list of readings"),
    ('[{"quantity": "colour", "value": 1}]', "unknown quantity 'colour'"),
    ('[{"quantity": "temperature", "value": 500}]', "outside the plausible range"),
    ("not json", "cannot read readings"),
])
def test_unusable_readings_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                                  message: str) -> None:
    path = tmp_path / "r.json"
    path.write_text(content)
    assert main(["plugins", "test", str(BUNDLED_DIR / "air_quality.py"), "--readings", str(path), "--native"]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_manifest_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plugin = tmp_path / "lonely.py"
    plugin.write_text("def evaluate(readings, host):\n    return None\n")
    path = readings_file(tmp_path, [[{"quantity": "temperature", "value": 22.0}]])
    assert main(["plugins", "test", str(plugin), "--readings", str(path), "--native"]) == 2
    assert "manifest not found" in capsys.readouterr().err
