"""`harvester demo`: hub, pi4 and pizero as separate node processes on 127.0.0.1, supervised."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "demo_configs"
NODES = ("hub", "pi4", "pizero")
MAX_BACKOFF = 30.0
DEMO_USER = "repl"
STABLE_AFTER = 60.0  # a node that ran this long gets its restart backoff reset


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the demo itself dies, so no node outlives it."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_port(host: str, port: int, timeout: float) -> bool:
    """Wait until host:port accepts TCP connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


@dataclass
class Child:
    """One supervised node process."""

    node: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = 1.0
    restart_at: float | None = None
    history: list[str] = field(default_factory=list)

    def spawn(self) -> None:
        """Start (or restart) the process, appending to its log file."""
        log = open(self.log_path, "ab")  # noqa: SIM115  (the child owns it for its lifetime)
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        self.started = time.monotonic()
        self.restart_at = None


class Demo:
    """Starts the three demo nodes and keeps them running until SIGINT/SIGTERM."""

    def __init__(self, state_dir: Path, web_port: int = 8080, ns_port: int = 9090,
                 host: str = "127.0.0.1", out=sys.stdout, tls: bool = False) -> None:
        self.state_dir = state_dir.resolve()
        self.tls = tls
        self.pki_dir = self.state_dir / "pki"
        self.tokens_file = self.state_dir / "tokens.json"
        self.web_port, self.ns_port, self.host = web_port, ns_port, host
        self.out = out
        self.children: dict[str, Child] = {}
        self._stopping = False

    def say(self, msg: str) -> None:
        """One status line on the terminal."""
        print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", file=self.out, flush=True)

    def _argv(self, node: str) -> list[str]:
        sets = [f"node.state_dir={self.state_dir / node}", f"hub.host={self.host}",
                f"hub.nameserver_port={self.ns_port}", f"agent.host={self.host}"]
        if node == "hub":
            sets += [f"web.port={self.web_port}", f"web.host={self.host}", f"web.tokens_file={self.tokens_file}"]
        if self.tls:
            from actors.cli.certs import Pki

            files = Pki(self.pki_dir).node(node)
            sets += ["security.tls=true", f"security.ca={files.ca}", f"security.cert={files.cert}",
                     f"security.key={files.key}"]
        argv = [sys.executable, "-m", "actors.cli", "node", "--config", str(CONFIG_DIR / f"{node}.toml")]
        for s in sets:
            argv += ["--set", s]
        return argv

    def start(self) -> None:
        """Check ports, start the hub, wait for its name server, start the spokes."""
        for port, what in ((self.ns_port, "name server"), (self.web_port, "dashboard")):
            if not port_free(self.host, port):
                raise SystemExit(f"harvester demo: port {port} on {self.host} ({what}) is in use; "
                                 f"stop what uses it or pick another with --port / --ns-port")
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if self.tls:
            ensure_demo_pki(self.pki_dir, self.host)
        operator = ensure_demo_tokens(self.tokens_file)
        for node in NODES:
            self.children[node] = Child(node, self._argv(node), logs / f"{node}.log")
        self.children["hub"].spawn()
        if not wait_port(self.host, self.ns_port, 30):
            self.stop()
            raise SystemExit(f"harvester demo: the hub did not start; see {logs / 'hub.log'}")
        for node in NODES[1:]:
            self.children[node].spawn()
        wait_port(self.host, self.web_port, 30)
        self.say(f"3 nodes started; logs in {logs}")
        self.say(f"dashboard: http://{self.host}:{self.web_port}/")
        self.say(f"operator token: {operator} (for the dashboard's controls; all tokens in {self.tokens_file})")
        if self.tls:
            from actors.cli.certs import Pki

            f = Pki(self.pki_dir).user(DEMO_USER)
            self.say(f"mutual TLS on; CA and certificates in {self.pki_dir}")
            self.say(f"REPL: HARVESTER_TLS_CA={f.ca} HARVESTER_TLS_CERT={f.cert} HARVESTER_TLS_KEY={f.key} "
                     f"harvester shell --ns {self.host}:{self.ns_port}")
        else:
            self.say(f'REPL: python -c \'from actors import connect; print(connect("{self.host}", {self.ns_port})'
                     '["pi4"]["dht22"].read())\'')
        self.say("Ctrl-C stops every node")

    def supervise_once(self) -> None:
        """Restart any node that exited, with exponential backoff."""
        now = time.monotonic()
        for child in self.children.values():
            proc = child.proc
            if proc is None or self._stopping:
                continue
            code = proc.poll()
            if code is None:
                if now - child.started > STABLE_AFTER:
                    child.backoff = 1.0
                continue
            if child.restart_at is None:
                child.restart_at = now + child.backoff
                self.say(f"{child.node} exited with code {code}; restarting in {child.backoff:.0f}s "
                         f"(log: {child.log_path})")
                child.backoff = min(child.backoff * 2, MAX_BACKOFF)
            elif now >= child.restart_at:
                child.restarts += 1
                child.spawn()
                self.say(f"{child.node} restarted (pid {child.proc.pid}, restart #{child.restarts})")

    def run(self) -> int:
        """Start, supervise until a stop signal, then stop everything."""
        signal.signal(signal.SIGTERM, lambda *_: self._request_stop())
        signal.signal(signal.SIGINT, lambda *_: self._request_stop())
        self.start()
        while not self._stopping:
            self.supervise_once()
            time.sleep(0.5)
        self.stop()
        return 0

    def _request_stop(self) -> None:
        self._stopping = True

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every node's process group, then SIGKILL what is left after `grace` seconds."""
        self._stopping = True
        running = [c for c in self.children.values() if c.proc and c.proc.poll() is None]
        for child in running:
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in running:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.node} ignored SIGTERM; killing it")
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait(timeout=5)
        self.say("all nodes stopped")


def ensure_demo_tokens(path: Path) -> str:
    """The operator token and a node token for each demo node, in a 0600 file; returns the operator token."""
    from actors.hub.tokens import Tokens

    tokens = Tokens(path)
    for node in NODES:
        tokens.ensure_node(node)
    return tokens.data()["operator"]


def ensure_demo_pki(root: Path, host: str) -> None:
    """On first run, a CA plus certificates for the three nodes and the REPL user; later runs reuse them."""
    from actors.cli import certs

    pki = certs.Pki(root)
    if not pki.ca_key.exists():
        certs.init_ca(root)
    hosts = [host, "localhost"] if host.startswith("127.") else [host]
    for node in NODES:
        if not pki.node(node).key.exists():
            certs.issue_node(root, node, hosts)
    if not pki.user(DEMO_USER).key.exists():
        certs.issue_user(root, DEMO_USER)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
