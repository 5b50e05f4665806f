"""Network health: round-trip time and packet loss from this board to the hub and its peers.

Probe choice, made once per sensor: unprivileged ICMP echo (a SOCK_DGRAM/IPPROTO_ICMP
"ping socket") when the kernel allows it for our group (net.ipv4.ping_group_range),
otherwise a TCP connect to host:port, timing the handshake (SYN -> SYN/ACK). A refused or
timed-out probe counts as lost. ICMP measures the host, TCP the service on the port; the
chosen method is logged at start-up so a dashboard reader knows which one they see.

Each target becomes its own sensor in the readings, named f"{name}-{label}"; rtt is the
median of the probes that answered (robust to one slow probe), packet_loss the share lost.
Targets are probed concurrently so one dead peer costs `probes * timeout` seconds, not more.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import logging
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hal.availability import FailureLog
from hal.errors import HalConfigError
from hal.readings import Reading, median

if TYPE_CHECKING:
    from hal.context import HalContext

log = logging.getLogger(__name__)

METHODS = ("auto", "icmp", "tcp")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0


@dataclass(frozen=True)
class Target:
    """One validated probe destination."""

    label: str
    host: str
    port: int


@dataclass(frozen=True)
class ProbeResult:
    """What the probes of one target found: the RTTs that came back and the last error."""

    sent: int
    rtts_ms: tuple[float, ...]
    error: str | None = None


def parse_target(label: str, spec: str) -> Target:
    """Validate a label and a "host:port" (IPv6 as "[::1]:port"); raise HalConfigError."""
    if not isinstance(label, str) or not LABEL_RE.match(label):
        raise HalConfigError(f"target label must be letters, digits, '_', '.', '-', got {label!r}")
    if not isinstance(spec, str):
        raise HalConfigError(f"target {label!r} must be a \"host:port\" string, got {spec!r}")
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\s:\[\]]+):(\d{1,5})", spec.strip())
    if not m:
        raise HalConfigError(f"target {label!r} must look like \"host:port\", got {spec!r}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 1 <= port <= 65535:
        raise HalConfigError(f"target {label!r}: port must be within 1..65535, got {port}")
    if m.group(1):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise HalConfigError(f"target {label!r}: {host!r} is not an IPv6 address") from None
    return Target(label, host, port)


def icmp_allowed() -> bool:
    """True when this process may open an unprivileged ICMP echo socket."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP).close()
    except OSError:
        return False
    return True


class NetworkHealth:
    """RTT (ms) and packet loss (%) to each configured target, one sensor name per target."""

    kind = "network"
    quantities = ("rtt", "packet_loss")

    def __init__(self, ctx: HalContext, name: str, targets: dict[str, str], probes: int = 3,
                 timeout: float = 1.0, method: str = "auto",
                 timer: Callable[[], float] = time.perf_counter) -> None:
        if not isinstance(targets, dict):
            raise HalConfigError(f"{name}: targets must be a mapping of label to \"host:port\"")
        if isinstance(probes, bool) or not isinstance(probes, int) or not 1 <= probes <= 100:
            raise HalConfigError(f"{name}: probes must be an integer within 1..100, got {probes!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
            raise HalConfigError(f"{name}: timeout must be within (0, 60] seconds, got {timeout!r}")
        if method not in METHODS:
            raise HalConfigError(f"{name}: method must be one of {METHODS}, got {method!r}")
        self.name = name
        self.targets = [parse_target(label, spec) for label, spec in targets.items()]
        self.probes = probes
        self.timeout = float(timeout)
        self._ctx = ctx
        self._timer = timer
        self._lock = threading.Lock()
        self._availability = FailureLog(log, name, down="unreachable", up="reachable again")
        self._closed = False
        if method == "auto":
            method = "icmp" if icmp_allowed() else "tcp"
            if method == "tcp":
                log.info("%s: unprivileged ICMP not allowed (net.ipv4.ping_group_range); "
                         "timing TCP connects instead", name)
        self.method = method
        # Start at a pid-derived number so restarts do not reuse the previous run's sequence;
        # next() on a count is atomic, and probes of several targets run in parallel threads.
        self._seq = itertools.count(os.getpid() & 0x7FFF)

    def __repr__(self) -> str:
        return f"NetworkHealth(name={self.name!r}, method={self.method!r}, targets={len(self.targets)})"

    def read(self) -> list[Reading]:
        """rtt and packet_loss per target; all probes lost gives rtt 'unavailable' and loss 100."""
        with self._lock:
            if self._closed:
                ts = self._ctx.clock()
                return [Reading.failed(self._ctx.node, f"{self.name}-{t.label}", q, ts, "sensor closed")
                        for t in self.targets for q in self.quantities]
            if not self.targets:
                return []
            if len(self.targets) == 1:
                # A spoke's usual single target (its hub) is probed in the caller's thread: a pool
                # and its thread, started and ended every read, buy nothing for one target.
                results = [self._probe_target(self.targets[0])]
            else:
                with ThreadPoolExecutor(max_workers=min(8, len(self.targets)),
                                        thread_name_prefix=f"{self.name}-probe") as pool:
                    results = list(pool.map(self._probe_target, self.targets))
            ts = self._ctx.clock()
            out: list[Reading] = []
            for target, result in zip(self.targets, results, strict=True):
                out += self._readings(target, result, ts)
            return out

    def close(self) -> None:
        """Nothing held between reads; later reads report 'closed'."""
        with self._lock:
            self._closed = True

    # -- readings and availability -----------------------------------------------------

    def _readings(self, target: Target, result: ProbeResult, ts: float) -> list[Reading]:
        sensor = f"{self.name}-{target.label}"
        node = self._ctx.node
        if result.sent == 0:
            # The probes could not even be sent (name did not resolve): no loss to report.
            reason = result.error or "no probe sent"
            self._note(target.label, reason)
            return [Reading.failed(node, sensor, q, ts, reason) for q in self.quantities]
        loss = 100.0 * (result.sent - len(result.rtts_ms)) / result.sent
        if not result.rtts_ms:
            reason = f"all {result.sent} {self.method} probes to {target.host}:{target.port} lost: {result.error}"
            self._note(target.label, reason)
            return [Reading.failed(node, sensor, "rtt", ts, reason),
                    Reading.measured(node, sensor, "packet_loss", loss, ts)]
        self._note(target.label, None)
        rtt = round(median(result.rtts_ms), 3)
        return [Reading.measured(node, sensor, "rtt", rtt, ts),
                Reading.measured(node, sensor, "packet_loss", round(loss, 2), ts)]

    def _note(self, label: str, reason: str | None) -> None:
        """Log a target going unreachable once, and its recovery once."""
        if reason is None:
            self._availability.recovered(label)
        else:
            self._availability.failed(label, reason)

    # -- probes ------------------------------------------------------------------------

    def _probe_target(self, target: Target) -> ProbeResult:
        try:
            family, addr = self._resolve(target)
        except OSError as exc:
            return ProbeResult(0, (), f"cannot resolve {target.host!r}: {exc}")
        rtts: list[float] = []
        error: str | None = None
        for _ in range(self.probes):
            try:
                if self.method == "icmp" and family == socket.AF_INET:
                    rtts.append(self._icmp_probe(addr[0]))
                else:
                    rtts.append(self._tcp_probe(family, addr))
            except OSError as exc:
                error = _describe(exc)
        return ProbeResult(self.probes, tuple(rtts), error)

    def _resolve(self, target: Target) -> tuple[int, tuple[Any, ...]]:
        """The first address of the host; numeric hosts skip the resolver.

        They skip getaddrinfo() too: Python encodes any str host with its IDNA codec there,
        which loads unicodedata and stringprep (0.3 MB) into a node that never sees a name."""
        try:
            ip = ipaddress.ip_address(target.host)
        except ValueError:
            pass
        else:
            if ip.version == 4:
                return socket.AF_INET, (str(ip), target.port)
            return socket.AF_INET6, (str(ip), target.port, 0, 0)
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(errno.EADDRNOTAVAIL, "no address")
        family, _, _, _, sockaddr = infos[0]
        return family, sockaddr

    def _tcp_probe(self, family: int, addr: tuple[Any, ...]) -> float:
        """Milliseconds for a TCP handshake; the connection is closed straight away."""
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            start = self._timer()
            sock.connect(addr)
            elapsed = self._timer() - start
        return elapsed * 1000.0

    def _icmp_probe(self, ip: str) -> float:
        """Milliseconds for one ICMP echo over a ping socket (the kernel sets the identifier)."""
        seq = next(self._seq) & 0xFFFF
        payload = struct.pack("!d", time.time())
        header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, 0, seq)
        packet = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, _checksum(header + payload), 0, seq) + payload
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP) as sock:
            start = self._timer()
            deadline = start + self.timeout
            sock.sendto(packet, (ip, 0))
            while True:
                remaining = deadline - self._timer()
                if remaining <= 0:
                    raise TimeoutError(errno.ETIMEDOUT, "no echo reply")
                sock.settimeout(remaining)
                data = sock.recv(2048)
                # Ping sockets deliver only replies to this socket's identifier; match the
                # sequence so a late reply to an earlier probe is not counted as this one.
                if len(data) >= 8:
                    rtype, _, _, _, rseq = struct.unpack("!BBHHH", data[:8])
                    if rtype == ICMP_ECHO_REPLY and rseq == seq:
                        return (self._timer() - start) * 1000.0


def _checksum(data: bytes) -> int:
    """The internet checksum (RFC 1071); the kernel recomputes it for ping sockets anyway."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _describe(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if exc.errno is not None:
        return f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror or exc}"
    return str(exc)
