"""sd_notify over real AF_UNIX datagram sockets, the watchdog beat, and a real `harvester node` under it."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from actors.node.systemd import Heartbeat, agent_probe, notify, watchdog_interval
from tests.helpers import free_port, wait_for, write_node_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def notify_socket(tmp_path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's, and its $NOTIFY_SOCKET value."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def receive(sock: socket.socket, until: str, limit: int = 200) -> list[str]:
    """Messages read from `sock` up to and including the first equal to `until`."""
    got: list[str] = []
    while len(got) < limit:
        got.append(sock.recv(4096).decode())
        if got[-1] == until:
            return got
    raise AssertionError(f"never got {until!r}; got {got[:20]}")


def test_notify_sends_the_message_to_a_path_socket(notify_socket):
    sock, path = notify_socket
    assert notify("READY=1", {"NOTIFY_SOCKET": path}) is True
    assert sock.recv(4096) == b"READY=1"


def test_notify_reaches_an_abstract_namespace_socket():
    name = f"harvester-test-{secrets.token_hex(6)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_notify_without_systemd_is_a_quiet_no_op(tmp_path):
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"}) is False


def test_watchdog_interval_is_half_of_watchdogsec_and_only_for_our_pid():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=4242) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_heartbeat_beats_only_while_the_probe_vouches_for_the_agent(notify_socket):
    sock, path = notify_socket
    alive = {"ok": True}
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.start()
    try:
        beat = Heartbeat(scheduler, lambda: alive["ok"], 0.05, send=lambda m: notify(m, {"NOTIFY_SOCKET": path}))
        beat.start()
        assert receive(sock, "WATCHDOG=1") == ["WATCHDOG=1"]
        wait_for(lambda: beat.beats >= 3, timeout=10, what="three beats")
        alive["ok"] = False
        sent = beat.beats
        wait_for(lambda: beat.missed >= 3, timeout=10, what="three withheld beats")
        assert beat.beats == sent
        sock.setblocking(False)
        pending = 0
        while True:
            try:
                sock.recv(4096)
            except BlockingIOError:
                break
            pending += 1
        # every datagram on the socket was sent before the probe failed (one may have raced it)
        assert pending <= sent
        alive["ok"] = True
        wait_for(lambda: beat.beats > sent, timeout=10, what="beats again once the probe passes")
        assert beat.missed == 0
    finally:
        scheduler.shutdown(wait=True)


def test_heartbeat_probe_fails_when_the_agents_daemon_is_gone(cluster):
    agent = cluster.start_node("pi4", sensors=[{"name": "monitor", "kind": "monitor", "interval": 1.0}])
    probe = agent_probe(agent, timeout=2.0)
    assert probe() is True
    beat = Heartbeat(agent.scheduler, probe, 60, send=lambda m: True)
    assert beat.beat() is True
    agent.daemon.shutdown()
    assert beat.beat() is False and beat.missed == 1


def test_node_agent_sends_ready_then_watchdog_beats_then_stopping(notify_socket, tmp_path):
    sock, path = notify_socket
    cfg = write_node_config(tmp_path / "pi4.toml", "pi4", "spoke", free_port(),
                            sensors=[{"name": "monitor", "kind": "monitor", "interval": 1.0}])
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}  # a beat every 0.1 s
    proc = subprocess.Popen([sys.executable, "-m", "actors.cli", "--log-level", "WARNING", "node", "--config", str(cfg)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        first = receive(sock, "READY=1")
        assert all(m.startswith("STATUS=") for m in first[:-1]), first
        beats = [receive(sock, "WATCHDOG=1")[-1] for _ in range(3)]
        assert beats == ["WATCHDOG=1"] * 3
        proc.send_signal(signal.SIGTERM)
        assert receive(sock, "STOPPING=1")[-1] == "STOPPING=1"
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
