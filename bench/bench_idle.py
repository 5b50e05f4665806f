"""Idle and half-sent connections against a name server: can legitimate clients still look names up?

Runs Pyro5's own name server daemon (its thread server: one worker thread per connection,
128 of them here) and Harvester's (the selector server in nameserver/transport.py) side by
side in this process on 127.0.0.1, holds N connections against each that never finish a
handshake (nine in ten silent, one in ten sending six header bytes), and meanwhile makes
`--lookups` name lookups with a 2 s timeout. Prints, per server and N, how many lookups
succeeded and their latency. Bounded: at most 2,000 held connections, one pass.

    python -m bench.bench_idle [--held 0,130,500] [--lookups 30]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import threading
import time
from typing import Any

from Pyro5 import errors
from Pyro5.api import Proxy
from Pyro5.nameserver import NameServerDaemon

from nameserver.pyro import configure
from nameserver.security import HarvesterNameServerDaemon
from nameserver.transport import raise_fd_limit

HOST = "127.0.0.1"
MAX_HELD = 2000


def hold(port: int, n: int) -> list[socket.socket]:
    """n connections that never finish a Pyro5 handshake."""
    socks = []
    for i in range(n):
        try:
            s = socket.create_connection((HOST, port), timeout=2)
        except OSError:  # the server stopped accepting: its backlog is full
            break
        if i % 10 == 9:
            s.sendall(b"PYRO" + struct.pack(">H", 502))
        socks.append(s)
    return socks


def lookups(port: int, count: int) -> tuple[int, list[float]]:
    """(successes, latencies in ms) of `count` lookups, each on a new connection."""
    ok, took = 0, []
    for _ in range(count):
        t0 = time.perf_counter()
        try:
            with Proxy(f"PYRO:Pyro.NameServer@{HOST}:{port}") as ns:
                ns._pyroTimeout = 2.0
                ns.lookup("Pyro.NameServer")
            ok += 1
            took.append((time.perf_counter() - t0) * 1000)
        except (errors.CommunicationError, OSError):
            pass
    return ok, took


def measure(kind: str, held: int, count: int) -> dict[str, Any]:
    """One server kind with `held` connections against it."""
    daemon = (HarvesterNameServerDaemon if kind == "harvester" else NameServerDaemon)(host=HOST, port=0)
    port = daemon.sock.getsockname()[1]
    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()
    socks: list[socket.socket] = []
    opened = 0
    try:
        socks = hold(port, min(held, MAX_HELD))
        opened = len(socks)
        time.sleep(0.2)  # let the server take them all in before the clients come
        ok, took = lookups(port, count)
    finally:
        for s in socks:
            s.close()
        daemon.shutdown()
        thread.join(timeout=10)
    p50 = statistics.median(took) if took else None
    p99 = max(took) if took else None
    return {"server": kind, "held": held, "opened": opened, "lookups": count, "ok": ok,
            "p50_ms": round(p50, 2) if p50 is not None else None,
            "max_ms": round(p99, 2) if p99 is not None else None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison and print one line per server and N."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--held", default="0,130,500", help="comma-separated counts of held connections")
    p.add_argument("--lookups", type=int, default=30)
    args = p.parse_args(argv)
    configure()
    raise_fd_limit()
    rows = []
    for held in (int(h) for h in args.held.split(",")):
        for kind in ("pyro5-thread", "harvester"):
            row = measure(kind, held, args.lookups)
            rows.append(row)
            print(f"{kind:>12}  held {row['opened']:>4}/{held:<4}: {row['ok']:>3}/{row['lookups']} lookups ok, "
                  f"p50 {row['p50_ms']} ms, max {row['max_ms']} ms", flush=True)
    return {"rows": rows}


if __name__ == "__main__":
    main()
