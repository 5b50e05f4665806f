"""Every CLI mistake gets one or two lines saying what is wrong and what to do, and its own exit code."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import free_port, write_node_config

ROOT = Path(__file__).resolve().parents[2]
USAGE, UNREACHABLE, ENVIRONMENT = 2, 3, 4


def harvester(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "actors.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")  # a node's own log, not the error


def one_clear_line(out: subprocess.CompletedProcess, code: int, *says: str) -> None:
    err = [line for line in out.stderr.strip().splitlines() if not LOG_LINE.match(line)]
    assert out.returncode == code, out
    assert "Traceback" not in out.stderr and 1 <= len(err) <= 2, out.stderr
    for words in says:
        assert words in out.stderr, out.stderr


@pytest.fixture
def bad_files(tmp_path):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(256)) * 4)
    utf16 = tmp_path / "utf16.toml"
    utf16.write_text('[node]\nname = "pi4"\n', encoding="utf-16")
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    return {"binary": (binary, "is not UTF-8 text"), "utf16": (utf16, "is not UTF-8 text"),
            "deep": (deep, "nested too deeply")}


@pytest.mark.parametrize("which", ["binary", "utf16", "deep"])
def test_cli_errors_unreadable_configs(bad_files, which):
    path, says = bad_files[which]
    check = harvester("config", "check", str(path))
    assert check.returncode == 1 and says in check.stdout and "Traceback" not in check.stdout + check.stderr
    one_clear_line(harvester("node", "--config", str(path)), USAGE, says)


def test_cli_errors_node_state_dir_it_cannot_use(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for state, says in ((blocker / "state", "a part of the path is a file"), (Path("/proc/nope"), "cannot keep state")):
        cfg = write_node_config(tmp_path / "pi4.toml", "pi4", "spoke", free_port())
        text = cfg.read_text().replace(f'state_dir = "{tmp_path / "state-pi4"}"', f'state_dir = "{state}"')
        cfg.write_text(text)
        one_clear_line(harvester("node", "--config", str(cfg)), USAGE, "node.state_dir", says)
        check = harvester("config", "check", str(cfg))
        assert check.returncode == 1 and says in check.stdout


def test_cli_errors_plaintext_lan_bind(tmp_path):
    cfg = write_node_config(tmp_path / "pi4.toml", "pi4", "spoke", free_port())
    cfg.write_text(cfg.read_text().replace('host = "127.0.0.1"\nport = 0', 'host = "0.0.0.0"\nport = 0'))
    one_clear_line(harvester("node", "--config", str(cfg)), USAGE, "agent.host", "turn on TLS")
    one_clear_line(harvester("nameserver", "--host", "0.0.0.0", "--port", str(free_port())), USAGE,
                   "refusing to serve Pyro5 on 0.0.0.0 without TLS")


def test_cli_errors_agent_port_in_use(tmp_path):
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        ns = free_port()
        hub = write_node_config(tmp_path / "hub.toml", "hub", "hub", ns)
        hub.write_text(hub.read_text().replace("port = 0", f"port = {port}"))
        one_clear_line(harvester("node", "--config", str(hub)), ENVIRONMENT,
                       f"agent.port: cannot listen on 127.0.0.1:{port}", "another process holds it")
    finally:
        taken.close()


def test_cli_errors_folders_it_cannot_write():
    one_clear_line(harvester("plugins", "new", "x", "--dir", "/proc/nope"), ENVIRONMENT, "/proc/nope")
    out = harvester("certs", "init", "--dir", "/proc/nope", "--node", "hub=127.0.0.1")
    if "pki" in out.stderr and "extra" in out.stderr:
        pytest.skip("the pki extra (cryptography) is not installed")
    one_clear_line(out, ENVIRONMENT, "/proc/nope")


def test_cli_errors_plugin_test_readings_deep_or_endless(tmp_path):
    plugin = ROOT / "plugins" / "bundled" / "room_temperature.py"
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    for readings, says in ((deep, "nested too deeply"), (Path("/dev/zero"), "larger than")):
        one_clear_line(harvester("plugins", "test", str(plugin), "--readings", str(readings), "--native"),
                       USAGE, says)


def test_cli_errors_jobs_on_unknown_node_and_job(cluster, pi4):
    ns = f"127.0.0.1:{cluster.ns_port}"
    one_clear_line(harvester("jobs", "ls", "--node", "nope", "--ns", ns), UNREACHABLE,
                   "no actor 'harvester.nope.jobs' in the name server")
    out = harvester("jobs", "run", "nope", "--node", "pi4", "--ns", ns)
    assert out.returncode == USAGE and "Traceback" not in out.stderr and "nope" in out.stderr, out


@pytest.mark.parametrize("name, method, says", [
    ("", "read", "'' is not an actor name"),
    ("harvester.pi4.dht22", "__class__", "'__class__' is not a remote method name"),
    ("pi4.dht22", "read", "is not an actor name: harvester.<node>.<actor>"),
])
def test_cli_errors_call_with_a_bad_name_blames_the_name_not_the_name_server(name, method, says):
    # port 1: nothing listens there; the mistake must be found before any connection is tried
    one_clear_line(harvester("call", name, method, "--ns", "127.0.0.1:1"), USAGE, says)
