"""`harvester health` against a real name server, hub and spoke on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys

import pytest

from actors.cli.main import main
from actors.node.version import package_version
from tests.helpers import write_node_config

SENSORS = [{"name": "monitor", "kind": "monitor", "interval": 0.5}]


@pytest.fixture
def pi4(cluster):
    return cluster.start_node("pi4", sensors=SENSORS)


def health(cluster, *args: str) -> int:
    return main(["health", "--ns", f"127.0.0.1:{cluster.ns_port}", *args])


def test_health_waits_until_the_hub_sees_the_spoke_online(cluster, pi4, capsys):
    assert health(cluster, "--node", "pi4", "--wait", "--timeout", "30", "--expect-version", package_version()) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"healthy: pi4: online at the hub 127.0.0.1:{cluster.ns_port}, version {package_version()}")


def test_health_of_the_hub_itself(cluster, capsys):
    assert health(cluster, "--node", "hub", "--wait", "--timeout", "30") == 0
    assert "healthy: hub: online" in capsys.readouterr().out


def test_health_reports_a_version_mismatch(cluster, pi4, capsys):
    assert health(cluster, "--node", "pi4", "--wait", "--timeout", "1", "--expect-version", "9.9.9") == 1
    err = capsys.readouterr().err
    assert f"pi4 NOT healthy: not healthy after 1 s: agent answers with version {package_version()}, expected 9.9.9" in err


def test_health_of_an_unknown_node_says_it_is_not_registered(cluster, capsys):
    assert health(cluster, "--node", "ghost") == 1
    assert "agent harvester.ghost.agent is not registered in the name server" in capsys.readouterr().err


def test_health_with_no_name_server_says_so(capsys):
    from tests.helpers import free_port

    assert main(["health", "--node", "pi4", "--ns", f"127.0.0.1:{free_port()}"]) == 1
    assert "unreachable" in capsys.readouterr().err


def test_health_agent_only_does_not_need_the_hub_view(cluster, pi4, capsys):
    assert health(cluster, "--node", "pi4", "--agent-only") == 0
    assert "pi4: agent answers" in capsys.readouterr().out


def test_health_fails_at_once_when_the_watched_pid_is_gone(cluster, capsys):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert health(cluster, "--node", "ghost", "--wait", "--timeout", "60", "--watch-pid", str(proc.pid)) == 1
    assert f"the agent process (pid {proc.pid}) exited" in capsys.readouterr().err


def test_health_reads_node_and_hub_from_a_config(cluster, pi4, tmp_path, capsys):
    cfg = write_node_config(tmp_path / "pi4-copy.toml", "pi4", "spoke", cluster.ns_port, sensors=SENSORS)
    assert main(["health", "--config", str(cfg), "--wait", "--timeout", "30"]) == 0
    assert "healthy: pi4" in capsys.readouterr().out


def test_health_usage_errors_exit_2(tmp_path, capsys):
    assert main(["health"]) == 2
    assert "name the node" in capsys.readouterr().err
    assert main(["health", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "file not found" in capsys.readouterr().err
