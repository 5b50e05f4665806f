"""node-release.sh's systemd steps, which the namespace test cannot reach (no systemd there).

The script is sourced and single steps are called, with systemctl, useradd, groupadd, getent,
id and chown replaced on PATH by stand-ins that only record their arguments, and the unit
directory moved into a temporary folder: nothing on this machine changes.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture
def node(tmp_path) -> dict[str, Path]:
    """A node's folders, staged units, and recording stand-ins for the system tools."""
    bin_dir, staging, units = tmp_path / "bin", tmp_path / "opt" / "staging", tmp_path / "units"
    for d in (bin_dir, staging / "systemd", units):
        d.mkdir(parents=True)
    for name in ("harvester-spoke.service", "run-as-root.conf"):
        (staging / "systemd" / name).write_text((DEPLOY / "systemd" / name).read_text())
    calls = tmp_path / "calls"
    for tool, status in (("systemctl", 0), ("useradd", 0), ("groupadd", 0), ("getent", 2), ("id", 1), ("chown", 0)):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\nexit {status}\n')
        (bin_dir / tool).chmod(0o755)
    return {"root": tmp_path, "bin": bin_dir, "units": units, "calls": calls}


def steps(node: dict[str, Path], script: str) -> subprocess.CompletedProcess:
    """Source node-release.sh as a systemd node with prefix <tmp>/opt and etc <tmp>/etc, then run `script`."""
    root = node["root"]
    prelude = (f'source {DEPLOY / "node-release.sh"}; PREFIX={root}/opt ETC={root}/etc STAGING={root}/opt/staging '
               f'SERVICE=systemd UNIT=harvester-spoke.service NODE=pi4; set -e; ')
    env = {"PATH": f"{node['bin']}:/usr/bin:/bin", "HARVESTER_SYSTEMD_DIR": str(node["units"])}
    return subprocess.run(["bash", "-c", prelude + script], capture_output=True, text=True, env=env, timeout=30)


def test_install_unit_renders_paths_creates_the_user_and_reloads(node):
    res = steps(node, "unit_differs && echo differs; RUN_AS_ROOT=0 install_unit; unit_differs || echo same")
    assert res.returncode == 0, res.stdout + res.stderr
    assert [w for w in res.stdout.split() if w in ("differs", "same")] == ["differs", "same"]
    unit = (node["units"] / "harvester-spoke.service").read_text()
    root = node["root"]
    assert f"ExecStart={root}/opt/current/bin/harvester node --config {root}/etc/node.toml" in unit
    assert "/opt/harvester" not in unit and "/etc/harvester" not in unit
    calls = node["calls"].read_text()
    assert "groupadd --system i2c" in calls and "groupadd --system gpio" in calls
    assert "useradd --system --user-group" in calls and "--groups i2c,gpio harvester" in calls
    assert "systemctl daemon-reload" in calls and "systemctl enable --quiet harvester-spoke.service" in calls
    assert not (node["units"] / "harvester-spoke.service.d").exists()


def test_run_as_root_adds_the_drop_in_and_restore_puts_the_old_unit_back(node):
    res = steps(node, "RUN_AS_ROOT=0 install_unit; RUN_AS_ROOT=1; unit_differs && echo differs; install_unit; "
                      "unit_differs || echo same; restore_unit")
    assert res.returncode == 0, res.stdout + res.stderr
    assert [w for w in res.stdout.split() if w in ("differs", "same")] == ["differs", "same"]
    # restore_unit went back to the unit as it was before the second install: no drop-in
    assert not (node["units"] / "harvester-spoke.service.d" / "10-run-as-root.conf").exists()
    assert (node["units"] / "harvester-spoke.service").exists()
    res = steps(node, "RUN_AS_ROOT=1 install_unit")
    dropin = node["units"] / "harvester-spoke.service.d" / "10-run-as-root.conf"
    assert res.returncode == 0 and "User=root" in dropin.read_text()


def test_tls_files_are_installed_private_and_restored(node):
    staged = node["root"] / "opt" / "staging" / "tls"
    staged.mkdir()
    for name, text in (("ca.crt", "ca"), ("pi4.crt", "cert"), ("pi4.key", "key")):
        (staged / name).write_text(text)
    res = steps(node, "mkdir -p $ETC; tls_differ && echo differs; RUN_AS_ROOT=0 install_tls; tls_differ || echo same; "
                      f"echo new > {staged}/pi4.key; tls_differ && echo changed; install_tls; restore_tls")
    assert res.returncode == 0, res.stdout + res.stderr
    assert [w for w in res.stdout.split() if w in ("differs", "same", "changed")] == ["differs", "same", "changed"]
    tls = node["root"] / "etc" / "tls"
    assert (tls / "pi4.key").read_text() == "key"  # restored to the first install
    assert (tls / "pi4.key").stat().st_mode & 0o777 == 0o600
    assert (tls / "ca.crt").stat().st_mode & 0o777 == 0o644
    assert f"chown -R harvester: {node['root']}/etc/tls.new" in node["calls"].read_text()
