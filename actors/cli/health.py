"""`harvester health`: does a node's agent answer, and does the hub see the node online?

Used by the fleet scripts after a restart (`harvester health --config /etc/harvester/node.toml
--wait --timeout 90 --expect-version V --watch-pid PID`) to decide between keeping a release
and rolling back. Exit status: 0 healthy, 1 not healthy (the last reason is printed), 2 bad
arguments or config.

Healthy means, in order:
1. `harvester.<node>.agent` is registered in the hub's name server and answers info()
   (with the expected version, when one is given);
2. the hub's aggregator lists the node as online, and for a spoke with --wait, the node's
   last_seen has advanced after step 1 passed: a fresh push from *this* agent, not a
   leftover from the process it replaced. The hub's own liveness comes from its own polls.

A node whose kernel reports its clock unsynchronised (adjtimex) is said so on a line of its
own, healthy or not: it is not a reason to roll a release back (NTP may simply not have synced
since the boot), but a spoke holds its readings until it syncs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hal.names import object_name

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_USAGE = 0, 1, 2


@dataclass
class Verdict:
    """One look at a node: healthy or not, why, and what the hub last said about it."""

    healthy: bool
    reason: str
    agent_ok: bool = False
    role: str | None = None
    version: str | None = None
    last_seen: float | None = None
    clock_synced: bool | None = None  # the node's kernel clock state; None: not known


class HealthProbe:
    """Looks at one node through the hub's name server: its agent, then the hub's view of it."""

    def __init__(self, node: str, ns_host: str, ns_port: int, expect_version: str | None = None,
                 agent_only: bool = False, call_timeout: float = 3.0, hub_name: str | None = None) -> None:
        from actors.client import ActorHandle
        from nameserver.pyro import configure

        configure()
        self.node, self.ns = node, f"{ns_host}:{ns_port}"
        self.expect_version = expect_version
        self.agent_only = agent_only
        self._agent = ActorHandle(object_name(node, "agent"), ns_host, ns_port, timeout=call_timeout, retries=0)
        self._ns_host, self._ns_port, self._timeout = ns_host, ns_port, call_timeout
        self._hub_name = hub_name
        self._aggregator: ActorHandle | None = None  # found in the name server at the first look

    def _hub(self) -> Any:
        """The hub's aggregator, found by its tags (or the hub's name) in the name server."""
        if self._aggregator is None:
            from Pyro5.client import Proxy

            from actors.client import ActorHandle
            from nameserver.registry import find_aggregator, ns_uri

            with Proxy(ns_uri(self._ns_host, self._ns_port)) as ns:
                ns._pyroTimeout = self._timeout
                name, _ = find_aggregator(ns, self._hub_name)
            self._aggregator = ActorHandle(name, self._ns_host, self._ns_port, timeout=self._timeout, retries=0)
        return self._aggregator

    def check(self, seen_after: float | None = None) -> Verdict:
        """One look; with `seen_after`, a spoke is healthy only once the hub saw it after that time."""
        from Pyro5 import errors as pyro_errors

        try:
            info = self._agent.call("info")
        except pyro_errors.NamingError as exc:
            return Verdict(False, self._naming_reason("agent", exc))
        except pyro_errors.CommunicationError as exc:
            return Verdict(False, f"agent harvester.{self.node}.agent does not answer: {exc}")
        verdict = self._judge(info, seen_after)
        clock = info.get("clock") if isinstance(info.get("clock"), dict) else {}
        verdict.clock_synced = clock.get("synced") if isinstance(clock.get("synced"), bool) else None
        if verdict.clock_synced is False:
            verdict.reason += f"\n  {self.node}: {clock.get('detail') or 'clock not synchronised'}"
        return verdict

    def _judge(self, info: dict[str, Any], seen_after: float | None) -> Verdict:
        """The verdict from the agent's info() and the hub's view of the node."""
        from Pyro5 import errors as pyro_errors

        version, role = info.get("version"), info.get("role")
        problems = info.get("problems") or []
        if problems:
            return Verdict(False, f"{self.node} is degraded: {'; '.join(map(str, problems))}", True, role, version)
        if self.expect_version and version != self.expect_version:
            return Verdict(False, f"agent answers with version {version}, expected {self.expect_version}",
                           role=role, version=version)
        if self.agent_only:
            return Verdict(True, f"{self.node}: agent answers (version {version})", True, role, version)
        try:
            rows = self._hub().call("nodes")
        except (pyro_errors.NamingError, pyro_errors.CommunicationError) as exc:
            self._aggregator = None  # a restarted hub may have another name or port
            return Verdict(False, f"hub aggregator unreachable: {exc}", True, role, version)
        row = next((r for r in rows if r.get("name") == self.node), None)
        if row is None:
            return Verdict(False, f"the hub does not know node {self.node} yet", True, role, version)
        last_seen = row.get("last_seen")
        if not row.get("online"):
            ago = f"{time.time() - last_seen:.0f} s ago" if last_seen else "never"
            return Verdict(False, f"the hub sees {self.node} offline (last seen {ago})", True, role, version,
                           last_seen)
        if seen_after is not None and role != "hub" and (last_seen or 0.0) <= seen_after:
            return Verdict(False, f"waiting for {self.node}'s first push from this agent to reach the hub",
                           True, role, version, last_seen)
        notes = "".join(f"\n  {n}" for n in info.get("notes") or [])
        return Verdict(True, f"{self.node}: online at the hub {self.ns}, version {version}{notes}", True, role,
                       version, last_seen)

    def _naming_reason(self, what: str, exc: Exception) -> str:
        text = str(exc)
        if "unknown name" in text:
            return f"{what} harvester.{self.node}.agent is not registered in the name server {self.ns}"
        return f"name server {self.ns} unreachable: {text}"


def pid_alive(pid: int) -> bool:
    """True while process `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def wait_healthy(probe: HealthProbe, timeout: float, interval: float = 0.5, watch_pid: int | None = None,
                 progress: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> Verdict:
    """Poll `probe` until healthy or `timeout` s; fail at once when `watch_pid` exits."""
    deadline = clock() + timeout
    seen_after: float | None = None
    last_reason = ""
    while True:
        if watch_pid is not None and not pid_alive(watch_pid):
            return Verdict(False, f"the agent process (pid {watch_pid}) exited")
        verdict = probe.check(seen_after)
        fresh = seen_after is not None or probe.agent_only or verdict.role == "hub"
        if verdict.healthy and fresh:
            return verdict
        if verdict.agent_ok and seen_after is None:
            seen_after = verdict.last_seen or 0.0
            if verdict.healthy:  # online, but possibly from the pushes of the process this one replaced
                verdict = Verdict(False, f"waiting for {probe.node}'s first push from this agent to reach the hub",
                                  True, verdict.role, verdict.version, verdict.last_seen)
        if progress and verdict.reason != last_reason:
            progress(verdict.reason)
        last_reason = verdict.reason
        remaining = deadline - clock()
        if remaining <= 0:
            return Verdict(False, f"not healthy after {timeout:g} s: {verdict.reason}", verdict.agent_ok,
                           verdict.role, verdict.version, verdict.last_seen)
        sleep(min(interval, remaining))


def _target(args: argparse.Namespace) -> tuple[str, str, int, str | None]:
    """(node, ns host, ns port, hub name) from --config or from --node/--ns/--hub; TLS from the node config."""
    if args.config:
        from actors.node.config import load_config

        cfg = load_config(args.config)
        sec = getattr(cfg, "security", None)
        if sec is not None and getattr(sec, "tls", False):
            from nameserver.security import TlsFiles, apply_tls

            apply_tls(TlsFiles(sec.ca, sec.cert, sec.key), serve=False)
        return args.node or cfg.name, *(args.ns or (cfg.hub_host, cfg.nameserver_port)), args.hub or cfg.hub_name
    if not args.node:
        raise ValueError("name the node: --node NAME (with --ns HOST:PORT) or --config FILE")
    from nameserver.security import use_client_tls

    use_client_tls()  # HARVESTER_TLS_CA/CERT/KEY, when set
    host, port = args.ns or ("127.0.0.1", 9090)
    return args.node, host, port, args.hub


def cmd_health(args: argparse.Namespace) -> int:
    """The `harvester health` subcommand."""
    from actors.node.config import ConfigError

    try:
        node, host, port, hub_name = _target(args)
    except (ConfigError, ValueError) as exc:  # TlsConfigError is a ValueError
        print(f"harvester health: {exc}", file=sys.stderr)
        return EXIT_USAGE
    probe = HealthProbe(node, host, port, args.expect_version, args.agent_only, hub_name=hub_name)
    if args.wait:
        def say(reason: str) -> None:
            print(f"harvester health: {reason}", file=sys.stderr, flush=True)

        verdict = wait_healthy(probe, args.timeout, args.interval, args.watch_pid, None if args.quiet else say)
    else:
        verdict = probe.check()
    if verdict.healthy:
        print(f"healthy: {verdict.reason}")
        return EXIT_HEALTHY
    print(f"harvester health: {node} NOT healthy: {verdict.reason}", file=sys.stderr)
    return EXIT_UNHEALTHY
