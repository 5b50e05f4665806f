"""Mutual TLS on a real fleet: a hub (name server included) and a spoke run as `harvester node`
processes with node certificates; every client is its own process, because Pyro5's TLS
settings are process-wide."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from actors.cli import certs
from nameserver.security import TlsFiles
from tests.helpers import HOST, free_port, wait_for, write_node_config

ROOT = Path(__file__).resolve().parents[2]
PROBE_TIMEOUT = 30  # a wedged probe process fails the test instead of hanging it


def tls_spec(files: TlsFiles) -> dict[str, str]:
    return {"ca": str(files.ca), "cert": str(files.cert), "key": str(files.key)}


def probe(command: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the probe in a fresh interpreter; its last stdout line is the JSON result."""
    res = subprocess.run([sys.executable, "-m", "tests.integration.tls_probe", command, json.dumps(spec)],
                         cwd=ROOT, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def probes(specs: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Several client processes at once (each pays an interpreter start)."""
    with ThreadPoolExecutor(len(specs)) as pool:
        futures = {k: pool.submit(probe, "call", s) for k, s in specs.items()}
        return {k: f.result() for k, f in futures.items()}


@dataclass
class TlsFleet:
    """A TLS hub + spoke, the PKI that made them, and a second CA that did not."""

    pki: certs.Pki
    rogue: certs.Pki
    ns_port: int
    web_port: int
    logs: dict[str, Path]

    def client(self, files: TlsFiles | dict[str, str] | None, *actions: list[Any],
               timeout: float = 5.0) -> dict[str, Any]:
        tls = tls_spec(files) if isinstance(files, TlsFiles) else files
        return {"tls": tls, "ns": [HOST, self.ns_port], "timeout": timeout, "actions": list(actions)}

    def readings(self) -> dict[str, dict]:
        with urllib.request.urlopen(f"http://{HOST}:{self.web_port}/api/readings", timeout=5) as res:
            return {n["name"]: n for n in json.load(res)["nodes"]}


def start_node(tmp: Path, name: str, role: str, ns_port: int, files: TlsFiles, **kwargs: Any) -> subprocess.Popen:
    extra = f'[security]\ntls = true\nca = "{files.ca}"\ncert = "{files.cert}"\nkey = "{files.key}"\n'
    path = write_node_config(tmp / f"{name}.toml", name, role, ns_port, extra=extra, **kwargs)
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115  (the child writes it for its lifetime)
    proc = subprocess.Popen([sys.executable, "-m", "actors.cli", "node", "--config", str(path)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    return proc


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[TlsFleet]:
    tmp = tmp_path_factory.mktemp("tls")
    hosts = [HOST, "localhost"]
    pki = certs.init_pki(tmp / "pki", [("hub", hosts), ("spoke1", hosts)], ["alice"])
    # Same names, same shape, another CA: only the signature differs.
    rogue = certs.init_pki(tmp / "rogue", [("hub", hosts)], ["alice"])
    # Signed by our CA but without the OU=node|user identity marker.
    certs._issue(pki.root, TlsFiles(pki.ca_cert, tmp / "anon.crt", tmp / "anon.key"), "anon", "",
                 [ExtendedKeyUsageOID.CLIENT_AUTH], [], 30, False)
    ns_port, web_port = free_port(), free_port()
    procs = {"hub": start_node(tmp, "hub", "hub", ns_port, pki.node("hub"), web_port=web_port,
                               sensors=[{"name": "monitor", "kind": "monitor", "interval": 1.0}])}
    f = TlsFleet(pki, rogue, ns_port, web_port, {n: tmp / f"{n}.log" for n in ("hub", "spoke1")})
    try:
        try:
            wait_for(f.readings, timeout=20, what="hub web up")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nhub log:\n{f.logs['hub'].read_text()}") from None
        procs["spoke1"] = start_node(tmp, "spoke1", "spoke", ns_port, pki.node("spoke1"),
                                     sensors=[{"name": "monitor", "kind": "monitor", "interval": 0.5}])
        yield f
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                pytest.fail(f"{name} ignored SIGTERM; log:\n{f.logs[name].read_text()}")


def spoke_agent_uri(fleet: TlsFleet) -> str:
    """The spoke agent's PYRO: URI, looked up as a user over TLS once it is registered."""
    def lookup() -> str | None:
        [res] = probe("call", fleet.client(fleet.pki.user("alice"), ["lookup", "harvester.spoke1.agent"]))
        return res["value"] if res["ok"] else None
    return wait_for(lookup, timeout=20, interval=0.3, what="spoke1 registered over TLS")


def test_tls_nodes_register_and_push_and_a_user_reads(fleet):
    uri = spoke_agent_uri(fleet)
    assert uri.startswith("PYRO:harvester.spoke1.agent@127.0.0.1:")
    # The spoke found the hub's aggregator through the name server and pushed, all over TLS.
    wait_for(lambda: fleet.readings().get("spoke1", {}).get("online"), timeout=20, what="spoke1 pushed")
    listed, pinged, direct = probe("call", fleet.client(
        fleet.pki.user("alice"), ["list"], ["ping", "harvester.spoke1.monitor"], ["ping_uri", uri]))
    assert listed["ok"] and {"harvester.hub.aggregator", "harvester.spoke1.monitor"} <= set(listed["value"])
    assert pinged["ok"] and direct["ok"], (pinged, direct)


def test_tls_refuses_no_certificate_foreign_ca_plaintext_and_unmarked_certificates(fleet):
    uri = spoke_agent_uri(fleet)
    ours = fleet.pki.ca_cert
    foreign = fleet.rogue.user("alice")
    unmarked = {"ca": str(ours), "cert": str(fleet.pki.root.parent / "anon.crt"),
                "key": str(fleet.pki.root.parent / "anon.key")}
    clients = {
        "no certificate": {"ca": str(ours)},
        # Trusts our CA (it is public) but presents a certificate signed by another CA.
        "foreign CA": {"ca": str(ours), "cert": str(foreign.cert), "key": str(foreign.key)},
        "plaintext": None,
        "no identity marker": unmarked,
    }
    results = probes({k: fleet.client(tls, ["list"], ["ping_uri", uri]) for k, tls in clients.items()})
    for who, res in results.items():
        for r in res:
            assert not r["ok"], f"{who}: {r['verb']} was accepted: {r}"
            assert r["error"] in ("CommunicationError", "ConnectionClosedError", "SSLError",
                                  "ConnectionResetError", "SSLEOFError"), (who, r)
    assert all("Harvester identity" in r["message"] for r in results["no identity marker"])
    # The refusals were the servers' decisions, and they are in the logs (a server may log a
    # moment after its client gave up, hence the wait).
    reasons = ("certificate verify failed", "peer did not return a certificate", "(a plaintext client?)",
               "no Harvester identity")
    for node in ("hub", "spoke1"):
        wait_for(lambda node=node: all(r in fleet.logs[node].read_text() for r in reasons), timeout=10,
                 what=f"{node} logging every refusal")
    # ...and the servers still answer a proper client afterwards.
    [ok] = probe("call", fleet.client(fleet.pki.user("alice"), ["ping_uri", uri]))
    assert ok["ok"], ok


def test_tls_only_node_certificates_change_names_and_only_their_own(fleet):
    uri = spoke_agent_uri(fleet)
    user = probe("call", fleet.client(
        fleet.pki.user("alice"), ["register", "harvester.alice.fake", uri], ["register", "harvester.spoke1.fake", uri],
        ["remove", "harvester.spoke1.agent"], ["lookup", "harvester.spoke1.agent"]))
    for r in user[:3]:
        assert (r["ok"], r["error"]) == (False, "SecurityError"), r
        assert "only node certificates may change names" in r["message"]
    assert user[3] == {**user[3], "ok": True, "value": uri}  # the refused remove removed nothing

    node = probe("call", fleet.client(
        fleet.pki.node("spoke1"), ["register", "harvester.spoke1.extra", uri], ["lookup", "harvester.spoke1.extra"],
        ["remove", "harvester.spoke1.extra"], ["register", "harvester.hub.aggregator", uri],
        ["remove", "harvester.hub.monitor"]))
    assert [r["ok"] for r in node[:3]] == [True, True, True], node
    assert node[1]["value"] == uri and node[2]["value"] == 1
    for r in node[3:]:
        assert (r["ok"], r["error"]) == (False, "SecurityError"), r
        assert "may only change harvester.spoke1.* names" in r["message"]


def idle_connection(port: int) -> socket.socket:
    """A TCP connection that never starts a TLS handshake."""
    return socket.create_connection((HOST, port), timeout=5)


def test_tls_idle_tcp_connections_do_not_block_other_clients(fleet):
    uri = spoke_agent_uri(fleet)
    spoke_port = int(uri.rsplit(":", 1)[1])
    idle = [idle_connection(fleet.ns_port), idle_connection(spoke_port)]
    try:
        # With the handshake on the accept loop each of these would wait for the idle peer
        # (forever: the accepted socket blocks); the 3 s call timeout would expire first.
        res = probe("call", fleet.client(fleet.pki.user("alice"), ["list"], ["ping_uri", uri], timeout=3.0))
        assert all(r["ok"] for r in res), res
    finally:
        for s in idle:
            s.close()


@dataclass
class Server:
    """A probe server process: stock Pyro5 Daemon or HarvesterDaemon, with TLS."""

    proc: subprocess.Popen
    uri: str
    port: int


@pytest.fixture
def tls_server(fleet) -> Iterator[Any]:
    started: list[Server] = []

    def start(kind: str, handshake_timeout: float = 1.0) -> Server:
        spec = {"kind": kind, "tls": tls_spec(fleet.pki.node("hub")), "handshake_timeout": handshake_timeout}
        proc = subprocess.Popen([sys.executable, "-m", "tests.integration.tls_probe", "serve", json.dumps(spec)],
                                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        info = json.loads(proc.stdout.readline())
        started.append(Server(proc, info["uri"], info["port"]))
        return started[-1]

    yield start
    for s in started:
        s.proc.stdin.close()  # the probe server stops when its stdin closes
        s.proc.wait(timeout=10)


def closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_tls_stock_pyro5_daemon_stalls_on_an_idle_connection(fleet, tls_server):
    """Stock Pyro5's TLS accept-loop stall, reproduced: the reason HarvesterDaemon exists. If Pyro5 fixes it, this fails."""
    server = tls_server("stock")
    idle = idle_connection(server.port)
    try:
        [res] = probe("call", fleet.client(fleet.pki.user("alice"), ["ping_uri", server.uri], timeout=1.5))
        assert not res["ok"] and "timed out" in res["message"], res
    finally:
        idle.close()
    [res] = probe("call", fleet.client(fleet.pki.user("alice"), ["ping_uri", server.uri], timeout=3.0))
    assert res["ok"], res  # the stall ends with the idle connection


def test_tls_harvester_daemon_serves_past_an_idle_connection_and_closes_it(fleet, tls_server):
    server = tls_server("harvester", handshake_timeout=1.0)
    idle = idle_connection(server.port)
    try:
        [res] = probe("call", fleet.client(fleet.pki.user("alice"), ["ping_uri", server.uri], timeout=1.5))
        assert res["ok"], res
        # The idle peer holds a worker only for the handshake timeout, not COMMTIMEOUT (30 s).
        start = time.monotonic()
        wait_for(lambda: closed_by_peer(idle), timeout=10, interval=0.05, what="idle connection closed")
        assert time.monotonic() - start < 10
    finally:
        idle.close()


def test_tls_demo_runs_three_nodes_with_mutual_tls(tmp_path):
    web, ns = free_port(), free_port()
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "actors.cli", "demo", "--tls", "--port", str(web),
                             "--ns-port", str(ns), "--state-dir", str(state)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def online() -> bool:
            with urllib.request.urlopen(f"http://{HOST}:{web}/api/readings", timeout=5) as res:
                nodes = {n["name"]: n for n in json.load(res)["nodes"]}
            return set(nodes) == {"hub", "pi4", "pizero"} and all(n["online"] for n in nodes.values())

        wait_for(online, timeout=30, interval=0.5, what="three TLS nodes pushing to the hub")
        pki = certs.Pki(state / "pki")
        assert oct(pki.ca_key.stat().st_mode & 0o777) == "0o600"
        repl = pki.user("repl")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_TLS_")}
        tls_env = {**env, "HARVESTER_TLS_CA": str(repl.ca), "HARVESTER_TLS_CERT": str(repl.cert),
                   "HARVESTER_TLS_KEY": str(repl.key)}
        ls = [sys.executable, "-m", "actors.cli", "ls", "--ns", f"{HOST}:{ns}"]
        with ThreadPoolExecutor(2) as pool:
            runs = [pool.submit(subprocess.run, ls, cwd=ROOT, env=e, capture_output=True, text=True,
                                timeout=PROBE_TIMEOUT) for e in (tls_env, env)]
            with_cert, plaintext = (r.result() for r in runs)
        assert with_cert.returncode == 0 and "harvester.pi4.dht22" in with_cert.stdout, with_cert
        assert plaintext.returncode == 3 and "HARVESTER_TLS_CA" in plaintext.stderr, plaintext
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert "mutual TLS on" in out and f"HARVESTER_TLS_CERT={repl.cert}" in out, out
    assert proc.returncode == 0, out
    assert os.path.exists(pki.node("pizero").key)
