"""Shared test helpers: free loopback ports, node config files, waiting on conditions."""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
# A job several tests schedule on pi4: it fills the LED strip, once an hour
CLEAR_LEDS_JOB = '''
[[jobs]]
name = "clear-leds"
interval = 3600
call = "harvester.pi4.leds.fill"
args = [0, 0, 40]
'''


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return low, high


def _port_range() -> tuple[int, int]:
    """The ports this test process may hand out: below the ephemeral range, and with several
    pytest-xdist workers, a slice of its own, so two workers never pick the same port in the
    moment between one's check and its user's bind."""
    low, _ = _ephemeral_range()
    start, end = max(1024, low - 12000), low
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1:
        size = (end - start) // int(count)
        start += size * (int(worker[2:]) % int(count))
        end = start + size
    return start, end


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, outside the kernel's ephemeral range.

    A port handed out by binding port 0 is released before its user binds it; meanwhile a
    daemon binding port 0 (every node agent does) may be given the same one, and the user
    then finds it taken. Ports below the ephemeral range are never handed out that way.
    The slice is walked in a shuffled order, each port once before any repeats: two random
    picks could name the same port for a fixture's name server and its web server, and the
    second then finds the first bound (a hub failed to start so, one run in a few)."""
    for _ in range(200):
        port = _next_port()
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # nothing free below the range: fall back to the kernel's pick
        s.bind((HOST, 0))
        return s.getsockname()[1]


_ports: list[int] = []


def reserve_port(port: int) -> None:
    """Keep free_port() from handing out `port` (the next one a caller took beside its own)."""
    _fill()
    if port in _ports:
        _ports.remove(port)


def _next_port() -> int:
    _fill()
    return _ports.pop()


def _fill() -> None:
    if not _ports:
        start, end = _port_range()
        _ports.extend(range(start, end - 1))  # end - 1: a caller may take the next port too (Raft)
        random.shuffle(_ports)


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # a condition that raises is simply not met yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; last error: {last_exc!r}")


def write_node_config(path: Path, name: str, role: str, ns_port: int, *, profile: str = "wasm",
                      web_port: int | None = None, push_interval: float = 0.5,
                      sensors: list[dict[str, Any]] | None = None, leds: bool = False, buzzer: bool = False,
                      extra: str = "", host: str = HOST, hub_host: str = HOST, batch_limit: int = 50,
                      embedded_nameserver: bool = True, hub_name: str | None = None,
                      hub_hosts: list[str] | None = None, cluster_secret: Path | None = None) -> Path:
    """Write a mock-mode node config for tests (127.0.0.1 unless a test namespace's address).

    `hub_hosts` ("host:port" each) makes it a node of a fleet with several hubs."""
    lines = [
        "[node]", f'name = "{name}"', f'role = "{role}"', f'profile = "{profile}"', 'hal = "mock"',
        f'state_dir = "{path.parent / ("state-" + name)}"',
        "[hub]", f'host = "{hub_host}"', f"nameserver_port = {ns_port}",
        f"embedded_nameserver = {'true' if embedded_nameserver else 'false'}",
        *([f'name = "{hub_name}"'] if hub_name else []),
        *([f"hosts = {list(hub_hosts)!r}".replace("'", '"')] if hub_hosts else []),
        *([f'cluster_secret_file = "{cluster_secret}"'] if cluster_secret and role == "hub" else []),
        "[agent]", f'host = "{host}"', "port = 0", "register_interval = 1",
        # test namespaces are private hosts the test made; plaintext there is deliberate
        f"allow_insecure_lan = {'false' if host == HOST else 'true'}",
        "[push]", f"interval = {push_interval}", f"batch_limit = {batch_limit}",
    ]
    if web_port is not None:
        lines += ["[web]", f'host = "{host}"', f"port = {web_port}"]
    if leds:
        lines += ["[leds]", "count = 11"]
    if buzzer:
        lines += ["[buzzer]", "gpio = 17"]
    for s in sensors or []:
        lines.append("[[sensors]]")
        lines += [f"{k} = {v!r}".replace("'", '"') for k, v in s.items()]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def store_ro(path: Path | str) -> sqlite3.Connection:
    """A read-only connection to a hub's store with its samples file attached (as the hub has it)."""
    from actors.hub.indexer import data_path

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    db.execute("ATTACH ? AS data", (f"file:{data_path(path)}?mode=ro",))
    return db


def hub_db(path: Path | str) -> sqlite3.Connection:
    """A read-only connection to a (running) hub's store whose `readings` holds every acknowledged
    reading: the ones already in samples and the ones still in the ingest log, read in one snapshot.

    The hub's indexer moves logged batches into samples (in the file beside the store's)
    behind the acknowledgement; a test reading the files from outside sees both, counted once:
    the log is read first, then samples with the indexer's mark, and a log row at or below the
    mark is already in samples."""
    from actors.hub.indexer import unpack_logged

    db = store_ro(path)
    db.execute("BEGIN")
    logged = db.execute("SELECT id, received, batches FROM main.ingest_log").fetchall()
    (moved,) = db.execute("SELECT log_id FROM data.moved").fetchone()
    units = {(n, s, q): u for n, s, q, u in db.execute("SELECT node, sensor, quantity, unit FROM series")}
    rows = [(node, sensor, quantity, ts, value, units[node, sensor, quantity], quality, reason, seq, received)
            for i, received, packed in logged if i > moved
            for node, seq, batch in unpack_logged(packed)
            for sensor, quantity, value, _, ts, quality, reason in batch]
    db.execute("CREATE TEMP TABLE logged (node, sensor, quantity, ts, value, unit, quality, reason, seq, received)")
    db.executemany("INSERT INTO temp.logged VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    db.execute("CREATE TEMP VIEW readings AS SELECT s.node, s.sensor, s.quantity, x.ts, x.value, s.unit, x.quality, "
               "x.reason, x.seq, x.received FROM data.samples x JOIN main.series s ON s.id = x.series "
               "UNION ALL SELECT * FROM temp.logged")
    return db
