"""Test hosts in network namespaces (root only): a private /24 behind a bridge.

Layout: bridge `hvb<tag>` in the root namespace holds 198.1x.Y.1/24; each host is a namespace
`hv<tag>-<name>` with one end of a veth pair on the bridge and its own address 198.1x.Y.N. The
subnet comes from 198.18.0.0/15 (RFC 2544's range for test networks: no LAN uses it, nothing
routes it) and is skipped when any local address or route overlaps it, so only addresses this
lab created (and loopback) are ever contacted. `cut(name)` / `mend(name)` take a host's link down and up. close() kills
every process in the namespaces, then removes them, the veths and the bridge.

Note: this file was rebuilt from the API that tests/cluster/test_outages.py uses (lab(net=...),
add_host() -> address, ns(), cut(), mend()) after the deploy work overwrote the first version
by accident; tests/cluster/sshlab.py adds an sshd per host on top of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import random
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def run(*argv: str) -> str:
    """Run a command, raise with its stderr on failure, return its stdout."""
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for line in run("ip", "-4", "-o", "addr", "show").splitlines():
        nets.append(ipaddress.ip_interface(line.split()[3]).network)
    for line in run("ip", "-4", "route", "show", "table", "all").splitlines():
        words = line.split()
        if not words:
            continue
        word = words[1] if words[0] in ("local", "broadcast", "unreachable", "blackhole", "prohibit") else words[0]
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.ip_network(word, strict=False))
    return [n for n in nets if n.prefixlen > 0]  # the default route overlaps everything; ignore it


def pick_subnet(net: int | None = None) -> ipaddress.IPv4Network:
    """A 198.18.0.0/15 /24 (`net` picks the third octet) that overlaps nothing on this machine."""
    used = _used_networks()
    rng = random.Random(secrets.randbits(32))
    for _ in range(300):
        third = net if net is not None else rng.randint(0, 255)
        candidate = ipaddress.ip_network(f"198.{rng.choice((18, 19))}.{third % 256}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise RuntimeError("no free /24 in 198.18.0.0/15 for the test network")


def wait_tcp(host: str, port: int, timeout: float = 10.0) -> None:
    """Poll until host:port accepts a TCP connection."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{host}:{port} did not open within {timeout}s: {exc}") from None
            time.sleep(0.05)


@dataclass
class Host:
    """One test host: a namespace with an address on the lab bridge."""

    name: str
    netns: str
    address: str
    veth: str  # the root-namespace end, on the bridge

    def pids(self) -> list[int]:
        """Every process in this host's network namespace."""
        out = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]


LOCK = Path("/tmp/harvester-test-netns.lock")


@dataclass
class Lab:
    """The bridge and the namespaces of one test."""

    net: int | None = None
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    subnet: ipaddress.IPv4Network | None = None
    hosts: dict[str, Host] = field(default_factory=dict)
    _links: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        """The bridge interface in the root namespace (at most 15 characters)."""
        return f"hvb{self.tag}"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge (.1)."""
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    def start(self) -> Lab:
        """Create the bridge with the root namespace's address on it.

        Test workers start labs side by side: the subnet is picked and its address put on the
        bridge under one lock, so the next lab sees it taken."""
        with open(LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.subnet = self.subnet or pick_subnet(self.net)
            run("ip", "link", "add", self.bridge, "type", "bridge")
            self._links.append(self.bridge)
            run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            run("ip", "link", "set", self.bridge, "up")
        return self

    def add_host(self, name: str) -> str:
        """A new namespace linked to the bridge; returns its address."""
        assert self.subnet is not None, "start() the lab first"
        index = len(self.hosts) + 2
        outer, inner = f"hv{self.tag}{index}h", f"hv{self.tag}{index}n"
        host = Host(name, f"hv{self.tag}-{name}", str(self.subnet.network_address + index), outer)
        run("ip", "netns", "add", host.netns)
        self.hosts[name] = host
        run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        self._links.append(outer)
        run("ip", "link", "set", inner, "netns", host.netns)
        run("ip", "link", "set", outer, "master", self.bridge, "up")
        run("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", inner)
        run("ip", "-n", host.netns, "link", "set", inner, "up")
        run("ip", "-n", host.netns, "link", "set", "lo", "up")
        return host.address

    def ns(self, name: str) -> str:
        """The namespace name of a host, for `ip netns exec`."""
        return self.hosts[name].netns

    def cut(self, name: str) -> None:
        """Take the host's link down: nothing reaches it, it reaches nothing."""
        run("ip", "link", "set", self.hosts[name].veth, "down")

    def mend(self, name: str) -> None:
        """Bring the host's link back up."""
        run("ip", "link", "set", self.hosts[name].veth, "up")

    def close(self) -> None:
        """Kill everything in the namespaces, then remove them, the veths and the bridge."""
        for host in self.hosts.values():
            kill_all(host)
        for host in self.hosts.values():
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)
        for link in reversed(self._links):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        self.hosts.clear()
        self._links.clear()


def kill_all(host: Host, grace: float = 5.0) -> None:
    """SIGTERM every process in the host's namespace (all started by the test), SIGKILL stragglers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = host.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in host.pids() if Path(f"/proc/{p}").exists()]
            if pids:
                time.sleep(0.05)
        if not pids:
            return


@contextlib.contextmanager
def lab(net: int | None = None) -> Iterator[Lab]:
    """A started Lab that is always torn down, even when the test fails."""
    the_lab = Lab(net=net)
    try:
        yield the_lab.start()
    finally:
        the_lab.close()
