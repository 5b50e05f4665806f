"""Clients that hold connections and say nothing (or half a message) cannot lock a node or the name server out."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from actors.client import connect
from nameserver.transport import raise_fd_limit
from tests.cluster.conftest import ROOT, assert_exactly_once, fill_disk
from tests.helpers import wait_for

HOST = "127.0.0.1"
IDLE = 400  # silent connections per target
PARTIAL = 100  # connections that sent a Pyro5 header's first bytes and stopped
SPOKE_SENSORS = [{"name": "dht22", "kind": "dht22", "interval": 1.0}]


def hold_connections(port: int, idle: int, partial: int) -> list[socket.socket]:
    """Open connections that never finish a Pyro5 handshake."""
    socks = []
    for i in range(idle + partial):
        s = socket.create_connection((HOST, port), timeout=5)
        if i >= idle:
            s.sendall(b"PYRO" + struct.pack(">H", 502))  # 6 of the 40 header bytes, then silence
        socks.append(s)
    return socks


def agent_port(ns_port: int, node: str) -> int:
    uri = connect(HOST, ns_port).names()[f"harvester.{node}.agent"]
    return int(str(uri).rsplit(":", 1)[1])


@pytest.mark.slow
def test_hostile_idle_connections_do_not_lock_out_the_name_server_or_an_agent(proc_cluster):
    raise_fd_limit()
    c = proc_cluster
    c.add("hub", "hub", sensors=[{"name": "monitor", "kind": "monitor", "interval": 2.0}])
    c.add("pi4", sensors=SPOKE_SENSORS, push_interval=1.0)
    wait_for(lambda: c.hub_last_seq("pi4") > 2, timeout=60, what="pi4 pushing to the hub")
    port = agent_port(c.ns_port, "pi4")
    held: list[socket.socket] = []
    try:
        held += hold_connections(c.ns_port, IDLE, PARTIAL)
        held += hold_connections(port, IDLE, PARTIAL)
        fleet = connect(HOST, c.ns_port, timeout=5.0)
        # Every lookup and every call succeeds while 1,000 connections are held against the two
        # servers: before, 128 of them refused every new connection.
        for _ in range(20):
            assert "pi4" in fleet.nodes()
            assert fleet.actor("harvester.pi4.dht22").call("ping") == "pong"
            assert fleet.actor("harvester.pi4.agent").call("ping") == "pong"
        seq = c.hub_last_seq("pi4")
        wait_for(lambda: c.hub_last_seq("pi4") > seq + 2, timeout=30, what="pi4 still pushing")
        # The silent ones are closed by the servers after the handshake deadline.
        wait_for(lambda: all(_closed(s) for s in held), timeout=30, interval=0.5,
                 what="the servers closing connections that never finished a handshake")
    finally:
        for s in held:
            s.close()


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        with contextlib.suppress(OSError):
            sock.setblocking(True)


def _post(url: str, token: str, body: dict, timeout: float = 30.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            return res.status, json.load(res)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.mark.slow
def test_hostile_a_frozen_spoke_fails_commands_fast_and_never_delays_reads(proc_cluster):
    c = proc_cluster
    c.add("hub", "hub", sensors=[{"name": "monitor", "kind": "monitor", "interval": 2.0}])
    pi4 = c.add("pi4", sensors=SPOKE_SENSORS, buzzer=True, push_interval=1.0)
    base = f"http://{HOST}:{c.web_port}"

    def online() -> bool:
        with urllib.request.urlopen(f"{base}/api/nodes", timeout=5) as res:
            return any(n["name"] == "pi4" and n["online"] for n in json.load(res))

    wait_for(online, timeout=60, what="pi4 online at the hub")
    token = json.loads((c.state("hub") / "tokens.json").read_text())["operator"]
    url = f"{base}/api/buzzer/control"
    # online (pushing) can come before pi4's names are registered: its first sweep may have
    # found the hub's name server not yet up, and the next comes a register interval later
    wait_for(lambda: _post(url, token, {"node": "pi4", "action": "off"})[0] == 200, timeout=30,
             what="pi4's buzzer registered and answering")
    finished: list[str] = []  # completion order of every request, commands and reads alike
    lock = threading.Lock()

    def command(i: int) -> tuple[int, dict]:
        out = _post(url, token, {"node": "pi4", "action": "beep", "count": 1})
        with lock:
            finished.append(f"command:{out[0]}:{out[1].get('error', '')}")
        return out

    def read() -> int:
        with urllib.request.urlopen(f"{base}/healthz", timeout=30) as res:
            status = res.status
        with lock:
            finished.append(f"read:{status}")
        return status

    os.killpg(pi4.proc.pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(24) as pool:
            commands = [pool.submit(command, i) for i in range(20)]
            reads = [pool.submit(read) for _ in range(4)]
            results = [f.result() for f in commands]
            assert [f.result() for f in reads] == [200] * 4
        statuses = sorted(r[0] for r in results)
        assert set(statuses) <= {503, 504}, results
        waited = [r for r in results if "did not answer within" in r[1]["error"]]
        # at most PER_NODE_COMMANDS requests waited for the frozen node; the rest were told at once why not
        assert len(waited) <= 2, results
        # every read finished before the last command that waited for the frozen node
        last_wait = max(i for i, f in enumerate(finished) if "did not answer within" in f)
        assert all(i < last_wait for i, f in enumerate(finished) if f.startswith("read:")), finished
        # and now the node is known stuck: a new command fails at once with the reason
        status, body = _post(url, token, {"node": "pi4", "action": "beep", "count": 1})
        assert status == 504 and ("fail at once" in body["error"] or "last probe" in body["error"]), body
    finally:
        os.killpg(pi4.proc.pid, signal.SIGCONT)
    wait_for(lambda: _post(url, token, {"node": "pi4", "action": "off"})[0] == 200, timeout=60, interval=1,
             what="commands to pi4 working again once it runs")


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                                capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.root
def test_hostile_a_full_spoke_disk_is_said_everywhere_and_loses_nothing(proc_cluster, tmp_path):
    c = proc_cluster
    state = c.state("pi4")
    if not _mount_tmpfs(state, "4m"):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        c.add("hub", "hub", sensors=[{"name": "monitor", "kind": "monitor", "interval": 2.0}])
        c.add("pi4", sensors=SPOKE_SENSORS, push_interval=1.0)
        wait_for(lambda: c.hub_last_seq("pi4") > 2, timeout=60, what="pi4 pushing to the hub")
        base = f"http://{HOST}:{c.web_port}"

        def pi4_view() -> dict:
            with urllib.request.urlopen(f"{base}/api/readings", timeout=5) as res:
                return next(n for n in json.load(res)["nodes"] if n["name"] == "pi4")

        fill_disk(state / "filler")
        full = wait_for(lambda: (pi4_view().get("outbox") or {}).get("disk_full") and pi4_view(), timeout=60,
                        what="the hub showing pi4's disk full")
        assert full["outbox"]["held_in_memory"] >= 1
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as res:
            assert 'harvester_outbox_disk_full{node="pi4"} 1' in res.read().decode()
        health = subprocess.run([sys.executable, "-m", "actors.cli", "health", "--node", "pi4", "--ns",
                                 f"{HOST}:{c.ns_port}"], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert health.returncode == 1 and "disk full" in health.stderr, health
        with urllib.request.urlopen(f"{base}/", timeout=5) as res:
            assert "disk full" in res.read().decode()
        (state / "filler").unlink()  # space returns
        wait_for(lambda: not (pi4_view().get("outbox") or {}).get("disk_full"), timeout=60,
                 what="pi4's disk writable again at the hub")
        c.wait_drained("pi4", timeout=90)
        c.nodes["pi4"].stop()
        assert_exactly_once(c, "pi4")  # and no batch dropped: held in memory, written later, pushed once
        log = (c.tmp / "pi4.log").read_text()
        assert log.count("outbox cannot write") == 1 and log.count("accepts writes again") == 1, log[-3000:]
    finally:
        c.stop()
        subprocess.run(["umount", "-l", str(state)], capture_output=True)
