"""`harvester demo`: hub, pi4 and pizero as separate node processes on 127.0.0.1, supervised."""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hal.files import write_atomic

CONFIG_DIR = Path(__file__).resolve().parent / "demo_configs"
NODES = ("hub", "pi4", "pizero")
SPOKES = ("pi4", "pizero")
NATIVE = ("pizero",)  # the spoke whose config has profile = "native"
HUB_NS_STEP = 10  # with several hubs, hub i's name server is on ns_port + 10 i (its Raft on the port after)
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


def shell_path(path: str) -> str:
    """An interpreter's path for a command to copy: relative when below the current dir
    (`.venv/bin/python`); a shell's bare `python`, outside the venv, lacks the package."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


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
                 host: str = "127.0.0.1", out=sys.stdout, tls: bool = False, hubs: int = 1,
                 export: str | None = None, mqtt: tuple[str, int] | None = None,
                 notify: dict[str, str | None] | None = None, native_python: str | None = None) -> None:
        self.state_dir = state_dir.resolve()
        # The interpreter of the native node: a board's release install has none of the
        # development venv's extras (bench.bench_nodes measures its memory that way).
        self.native_python = native_python or sys.executable
        self.export = export
        self.mqtt = mqtt
        self.notify = {k: v for k, v in (notify or {}).items() if v}
        # one hub is called "hub", as in every single-hub config; several are hub1, hub2, ...
        self.hubs = ["hub"] if hubs == 1 else [f"hub{i}" for i in range(1, hubs + 1)]
        self.nodes = [*self.hubs, *SPOKES]
        self.secret_file = self.state_dir / "cluster.secret"
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

    def ns_port_of(self, hub: str) -> int:
        """The name-server port of one of the demo's hubs."""
        return self.ns_port + HUB_NS_STEP * self.hubs.index(hub)

    def web_port_of(self, hub: str) -> int:
        """The dashboard port of one of the demo's hubs (--port P gives P, P+1, ...)."""
        return self.web_port + self.hubs.index(hub)

    def _argv(self, node: str) -> list[str]:
        hub = node if node in self.hubs else self.hubs[0]
        sets = [f"node.state_dir={self.state_dir / node}", f"hub.host={self.host}",
                f"hub.nameserver_port={self.ns_port_of(hub)}", f"agent.host={self.host}"]
        if len(self.hubs) > 1:
            hosts = ", ".join(f'"{self.host}:{self.ns_port_of(h)}"' for h in self.hubs)
            sets += [f"hub.hosts=[{hosts}]"]
            if node in self.hubs:
                sets += [f"node.name={node}", f"hub.cluster_secret_file={self.secret_file}"]
        if node in self.hubs:
            sets += [f"web.port={self.web_port_of(node)}", f"web.host={self.host}",
                     f"web.tokens_file={self.tokens_file}"]
            if self.export:  # one [export] table; with several hubs the leader sends
                sets += [f'export.url="{self.export}"', "export.name=demo", "export.flush_interval=1"]
            if self.mqtt:  # every hub publishes the fleet (with several, each under its own client id)
                sets += [f'mqtt.host="{self.mqtt[0]}"', f"mqtt.port={self.mqtt[1]}"]
            if self.notify:  # a channel each, every severity
                tables = ", ".join(f'{{kind = "{k}", url = "{u}", rate_per_hour = 120}}' for k, u in self.notify.items())
                sets += [f"notify=[{tables}]"]
        if self.tls:
            from actors.cli.certs import Pki

            files = Pki(self.pki_dir).node(node)
            sets += ["security.tls=true", f"security.ca={files.ca}", f"security.cert={files.cert}",
                     f"security.key={files.key}"]
        config = CONFIG_DIR / f"{'hub' if node in self.hubs else node}.toml"
        python = self.native_python if node in NATIVE else sys.executable
        argv = [python, "-m", "actors.cli", "node", "--config", str(config)]
        for s in sets:
            argv += ["--set", s]
        return argv

    def start(self) -> None:
        """Check ports, start the hub, wait for its name server, start the spokes."""
        ports = [(self.ns_port_of(h), f"{h}'s name server") for h in self.hubs]
        if len(self.hubs) > 1:
            ports += [(self.ns_port_of(h) + 1, f"{h}'s Raft") for h in self.hubs]
        ports += [(self.web_port_of(h), f"{h}'s dashboard") for h in self.hubs]
        for port, what in ports:
            if not port_free(self.host, port):
                raise SystemExit(f"harvester demo: port {port} on {self.host} ({what}) is in use; "
                                 f"stop what uses it or pick another with --port / --ns-port")
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if self.tls:
            ensure_demo_pki(self.pki_dir, self.host, self.nodes)
        if len(self.hubs) > 1 and not self.secret_file.exists():
            write_atomic(self.secret_file, (secrets.token_hex(32) + "\n").encode(), mode=0o600)
        operator = ensure_demo_tokens(self.tokens_file, self.nodes)
        for node in self.nodes:
            self.children[node] = Child(node, self._argv(node), logs / f"{node}.log")
        for hub in self.hubs:
            self.children[hub].spawn()
        for hub in self.hubs:
            if not wait_port(self.host, self.ns_port_of(hub), 30):
                self.stop()
                raise SystemExit(f"harvester demo: {hub} did not start; see {logs / (hub + '.log')}")
        for node in SPOKES:
            self.children[node].spawn()
        for hub in self.hubs:
            wait_port(self.host, self.web_port_of(hub), 30)
        self.say(f"{len(self.nodes)} nodes started; logs in {logs}")
        for hub in self.hubs:
            self.say(f"dashboard{'' if len(self.hubs) == 1 else ' of ' + hub}: "
                     f"http://{self.host}:{self.web_port_of(hub)}/")
        self.say(f"operator token: {operator} (for the dashboard's controls; all tokens in {self.tokens_file})")
        if self.export:
            self.say(f"every reading goes to {self.export} too (the dashboard's Exports panel shows how far it is)")
        for kind, url in self.notify.items():
            self.say(f"alert messages go to {url} ({kind}); `harvester notify test` sends one now")
        if self.mqtt:
            self.say(f"the fleet is published to the MQTT broker at {self.mqtt[0]}:{self.mqtt[1]}: Home Assistant "
                     "finds hub, pi4 and pizero as devices (MQTT integration, discovery on)")
        if self.tls:
            from actors.cli.certs import Pki

            f = Pki(self.pki_dir).user(DEMO_USER)
            self.say(f"mutual TLS on; CA and certificates in {self.pki_dir}")
            self.say(f"REPL: HARVESTER_TLS_CA={f.ca} HARVESTER_TLS_CERT={f.cert} HARVESTER_TLS_KEY={f.key} "
                     f"harvester shell --ns {self.host}:{self.ns_port}")
        else:
            where = f'"{self.host}", {self.ns_port}' if len(self.hubs) == 1 else \
                "[" + ", ".join(f'"{self.host}:{self.ns_port_of(h)}"' for h in self.hubs) + "]"
            self.say(f"REPL: {shell_path(sys.executable)} -c 'from actors import connect; print(connect({where})"
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


def ensure_demo_tokens(path: Path, nodes: list[str] | tuple[str, ...] = NODES) -> str:
    """The operator token and a node token for each demo node, in a 0600 file; returns the operator token."""
    from actors.hub.tokens import Tokens

    tokens = Tokens(path)
    for node in nodes:
        tokens.ensure_node(node)
    return tokens.data()["operator"]


def ensure_demo_pki(root: Path, host: str, nodes: list[str] | tuple[str, ...] = NODES) -> None:
    """On first run, a CA plus certificates for the three nodes and the REPL user; later runs reuse them."""
    from actors.cli import certs

    pki = certs.Pki(root)
    if not pki.ca_key.exists():
        certs.init_ca(root)
    hosts = [host, "localhost"] if host.startswith("127.") else [host]
    for node in nodes:
        if not pki.node(node).key.exists():
            certs.issue_node(root, node, hosts)
    if not pki.user(DEMO_USER).key.exists():
        certs.issue_user(root, DEMO_USER)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
