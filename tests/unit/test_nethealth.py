"""NetworkHealth against 127.0.0.1 only: a listening port, a closed port, validation."""

from __future__ import annotations

import errno
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hal.errors import HalConfigError
from hal.nethealth import NetworkHealth, parse_target
from hal.readings import Reading
from hal.sensor import SENSOR_KINDS

T0 = 1_700_000_000.0


class Ctx:
    """What NetworkHealth takes from HalContext."""

    node = "pi4"

    def clock(self) -> float:
        return T0


@pytest.fixture
def listening_port() -> Iterator[int]:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)  # the kernel completes handshakes without accept()
    yield srv.getsockname()[1]
    srv.close()


@pytest.fixture
def closed_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # bound but never listening, then released: connects are refused
    return port


def net(targets: dict[str, str], **kw: object) -> NetworkHealth:
    kw.setdefault("method", "tcp")
    kw.setdefault("timeout", 0.5)
    return NetworkHealth(ctx=Ctx(), name="network", targets=targets, **kw)  # type: ignore[arg-type]


def by_key(readings: list[Reading]) -> dict[tuple[str, str], Reading]:
    return {(r.sensor, r.quantity): r for r in readings}


def test_nethealth_tcp_to_a_listening_port(listening_port: int) -> None:
    r = by_key(net({"hub": f"127.0.0.1:{listening_port}"}).read())
    assert set(r) == {("network-hub", "rtt"), ("network-hub", "packet_loss")}
    rtt, loss = r["network-hub", "rtt"], r["network-hub", "packet_loss"]
    assert rtt.ok and 0 < rtt.value < 500 and rtt.unit == "ms"
    assert loss.ok and loss.value == 0.0 and loss.unit == "%"
    assert rtt.node == "pi4" and rtt.ts == T0


def test_nethealth_closed_port_is_total_loss(closed_port: int) -> None:
    r = by_key(net({"peer": f"127.0.0.1:{closed_port}"}, probes=4).read())
    rtt, loss = r["network-peer", "rtt"], r["network-peer", "packet_loss"]
    assert rtt.quality == "unavailable" and rtt.value is None
    assert "all 4 tcp probes" in rtt.reason and "ECONNREFUSED" in rtt.reason
    assert loss.ok and loss.value == 100.0


def test_nethealth_each_target_is_its_own_sensor(listening_port: int, closed_port: int) -> None:
    r = by_key(net({"hub": f"127.0.0.1:{listening_port}", "pizero": f"127.0.0.1:{closed_port}"}).read())
    assert r["network-hub", "packet_loss"].value == 0.0
    assert r["network-pizero", "packet_loss"].value == 100.0
    assert len(r) == 4


def test_nethealth_partial_loss_and_median_rtt(listening_port: int) -> None:
    ticks = iter([0.0, 0.004, 1.0, 1.010, 2.0, 2.005, 3.0, 3.100])

    class Lossy(NetworkHealth):
        calls = 0

        def _tcp_probe(self, family: int, addr: tuple) -> float:
            Lossy.calls += 1
            if Lossy.calls == 2:
                raise TimeoutError("timed out")
            return super()._tcp_probe(family, addr)

    sensor = Lossy(ctx=Ctx(), name="network", targets={"hub": f"127.0.0.1:{listening_port}"},  # type: ignore[arg-type]
                   probes=4, method="tcp", timer=lambda: next(ticks))
    r = by_key(sensor.read())
    assert r["network-hub", "packet_loss"].value == 25.0
    assert r["network-hub", "rtt"].value == pytest.approx(5.0)  # median of 4, 5 and 100 ms


def test_nethealth_unresolvable_host_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*_a: object, **_k: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    # Patched so the test never asks a real resolver (which would leave loopback).
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    r = by_key(net({"hub": "hub.example:9090"}).read())
    assert all(x.quality == "unavailable" for x in r.values())
    assert "cannot resolve 'hub.example'" in r["network-hub", "packet_loss"].reason


def test_nethealth_logs_unreachable_once_and_recovery_once(
        closed_port: int, caplog: pytest.LogCaptureFixture) -> None:
    sensor = net({"hub": f"127.0.0.1:{closed_port}"}, probes=1)
    with caplog.at_level(logging.INFO, logger="hal.nethealth"):
        sensor.read()
        sensor.read()
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            srv.bind(("127.0.0.1", closed_port))
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE
            pytest.skip("the freed port was taken by another process")
        srv.listen(4)
        try:
            sensor.read()
            sensor.read()
        finally:
            srv.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1


def test_nethealth_auto_picks_icmp_only_where_allowed(listening_port: int) -> None:
    from hal.nethealth import icmp_allowed

    sensor = net({"hub": f"127.0.0.1:{listening_port}"}, method="auto")
    assert sensor.method == ("icmp" if icmp_allowed() else "tcp")
    assert by_key(sensor.read())["network-hub", "packet_loss"].value == 0.0


def test_nethealth_icmp_echo_to_loopback(closed_port: int) -> None:
    from hal.nethealth import icmp_allowed

    if not icmp_allowed():
        pytest.skip("unprivileged ICMP not allowed here (net.ipv4.ping_group_range)")
    # ICMP answers for the host whatever the port, so even a closed port has no loss.
    r = by_key(net({"lo": f"127.0.0.1:{closed_port}"}, method="icmp").read())
    assert r["network-lo", "packet_loss"].value == 0.0 and r["network-lo", "rtt"].ok


ICMP_IN_NETNS = """
import json
from hal.nethealth import NetworkHealth

class Ctx:
    node = "pi4"
    def clock(self):
        return 1.0

sensor = NetworkHealth(Ctx(), "network", {"lo": "127.0.0.1:1"}, probes=3, timeout=0.5)
print(json.dumps([sensor.method] + [[r.quantity, r.value, r.quality] for r in sensor.read()]))
"""


@pytest.mark.root
def test_nethealth_icmp_in_a_private_network_namespace() -> None:
    """Exercise the ping-socket path even where the host forbids it: a fresh netns has only lo."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip to make a network namespace")
    # ping_group_range is per network namespace, so this leaves the host's setting alone.
    script = ("ip link set lo up && echo '0 2147483647' > /proc/sys/net/ipv4/ping_group_range"
              f" && exec {shlex.quote(sys.executable)} -c {shlex.quote(ICMP_IN_NETNS)}")
    done = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True,
                          timeout=30, cwd=Path(__file__).resolve().parents[2])
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"cannot create a network namespace: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    method, (q1, rtt, ok1), (q2, loss, ok2) = json.loads(done.stdout)
    assert method == "icmp"
    assert (q1, ok1, q2, ok2) == ("rtt", "ok", "packet_loss", "ok")
    assert 0 < rtt < 100 and loss == 0.0


def test_nethealth_no_targets_no_readings() -> None:
    assert net({}).read() == []


def test_nethealth_close_makes_reads_unavailable(listening_port: int) -> None:
    sensor = net({"hub": f"127.0.0.1:{listening_port}"})
    sensor.close()
    assert all(r.reason == "sensor closed" for r in sensor.read())


@pytest.mark.parametrize(("spec", "host", "port"), [
    ("127.0.0.1:9090", "127.0.0.1", 9090),
    ("hub.local:1", "hub.local", 1),
    ("[::1]:65535", "::1", 65535),
    (" pi4:22 ", "pi4", 22),
])
def test_parse_target_accepts_host_port(spec: str, host: str, port: int) -> None:
    t = parse_target("hub", spec)
    assert (t.label, t.host, t.port) == ("hub", host, port)


@pytest.mark.parametrize("spec", ["127.0.0.1", "host:0", "host:65536", "host:abc", ":80", "a b:80",
                                  "[::zz]:80", "::1:80", "host:123456", 8080])
def test_parse_target_rejects_bad_specs(spec: object) -> None:
    with pytest.raises(HalConfigError):
        parse_target("hub", spec)  # type: ignore[arg-type]


@pytest.mark.parametrize("label", ["", "has space", "-lead", "x" * 64, 3])
def test_parse_target_rejects_bad_labels(label: object) -> None:
    with pytest.raises(HalConfigError):
        parse_target(label, "127.0.0.1:80")  # type: ignore[arg-type]


@pytest.mark.parametrize("kw", [{"probes": 0}, {"probes": True}, {"timeout": 0}, {"timeout": 61},
                                {"method": "udp"}, {"targets": ["127.0.0.1:80"]}])
def test_nethealth_rejects_bad_parameters(kw: dict) -> None:
    targets = kw.pop("targets", {"hub": "127.0.0.1:80"})
    with pytest.raises(HalConfigError):
        net(targets, **kw)


def test_nethealth_builds_from_the_sensor_table(listening_port: int) -> None:
    sensor = SENSOR_KINDS["network"].build(Ctx(), "net",  # type: ignore[arg-type]
                                           {"targets": {"hub": f"127.0.0.1:{listening_port}"}})
    assert isinstance(sensor, NetworkHealth) and sensor.probes == 3 and sensor.timeout == 1.0
    assert {r.sensor for r in sensor.read()} == {"net-hub"}
