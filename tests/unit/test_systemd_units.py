"""The systemd units in deploy/systemd: what issue #8 asks of each, and systemd's own verdict."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
NAMES = ("harvester-hub.service", "harvester-spoke.service", "harvester-native.service")


def directives(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (a unit may repeat a key), comments dropped."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m.group(1)
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.parametrize("name", NAMES)
def test_unit_restarts_always_as_a_dedicated_user_with_hardening_and_a_watchdog(name):
    d = directives(UNITS / name)
    svc = d["Service"]
    one = {k: v[-1] for k, v in svc.items()}
    assert one["Restart"] == "always"
    assert d["Unit"]["StartLimitIntervalSec"] == ["0"]  # never give up restarting
    assert one["User"] == "harvester" and set(one["SupplementaryGroups"].split()) == {"i2c", "gpio"}
    assert one["ProtectSystem"] == "strict"
    assert "/var/lib/harvester" in one["ReadWritePaths"].split()
    assert one["StateDirectory"] == "harvester"
    assert one["NoNewPrivileges"] == "yes" and one["PrivateTmp"] == "yes"
    assert one["Type"] == "notify" and int(one["WatchdogSec"]) >= 10
    assert one["StandardOutput"] == "journal" and one["StandardError"] == "journal"
    assert one["ExecStart"] == "/opt/harvester/current/bin/harvester node --config /etc/harvester/node.toml"
    assert d["Install"]["WantedBy"] == ["multi-user.target"]


def test_only_the_native_unit_forbids_writable_executable_memory():
    # wasmtime compiles plugins to machine code: the WASM units must allow it.
    assert directives(UNITS / "harvester-native.service")["Service"]["MemoryDenyWriteExecute"] == ["yes"]
    for name in ("harvester-hub.service", "harvester-spoke.service"):
        assert "MemoryDenyWriteExecute" not in directives(UNITS / name)["Service"]


def test_run_as_root_drop_in_only_changes_the_user():
    d = directives(UNITS / "run-as-root.conf")
    assert d == {"Service": {"User": ["root"], "Group": ["root"]}}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("name", NAMES)
def test_systemd_analyze_verify_accepts_the_unit(name, tmp_path):
    # verify also checks that ExecStart's program exists; point it at one that does.
    unit = tmp_path / name
    unit.write_text((UNITS / name).read_text().replace("/opt/harvester/current/bin/harvester", shutil.which("true")))
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), res.stdout + res.stderr
