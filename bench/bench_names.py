"""The hub's name server under a fleet's registration sweeps: CPU per sweep and in all.

Every node keeps its names registered by sweeping the hub's name server every
`agent.register_interval` seconds (5 by default): a new connection, one listing, and a
registration for any name missing or changed. This runs a name server (Harvester's, as the
hub embeds it) alone on one CPU, fills it with --nodes nodes of --names names each, and
sweeps for every node at its interval from this process on the other CPU, with the real
Registrar. It measures the name server's CPU twice in the same run: listing only the node's
own names (what nodes do now) and listing the whole fleet's (what they did before).
Loopback only; bounded by --seconds per measurement."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.loadgen import free_port, hub_usage
from nameserver.registry import Registrar, Registration

ACTORS = ("agent", "outbox", "monitor", "network", "bme680", "dht22", "plugins", "jobs", "leds", "buzzer")


def _serve(port: int, cpu: int, ready: Any) -> None:
    os.sched_setaffinity(0, {cpu})
    from nameserver.server import EmbeddedNameServer

    server = EmbeddedNameServer("127.0.0.1", port).start()
    ready.put(server.port)
    threading.Event().wait()


class FleetListing(Registrar):
    """The sweep as it was: the whole fleet's names listed, this node's looked up in them."""

    @staticmethod
    def _register(ns: Any, entries: list[Registration]) -> None:
        current = ns.list(prefix="harvester.", return_metadata=True)
        for e in entries:
            have = current.get(e.name)
            if have is None or have[0] != e.uri or set(have[1]) != set(e.metadata):
                ns.register(e.name, e.uri, metadata=set(e.metadata))


def registrars(cls: type[Registrar], port: int, nodes: int, names: int) -> list[Registrar]:
    out = []
    for n in range(nodes):
        r = cls([("127.0.0.1", port)])
        for a in ACTORS[:names]:
            r.add(f"harvester.spoke{n:04d}.{a}", f"PYRO:{a}@127.0.0.1:{20000 + n}", {f"node:spoke{n:04d}", f"kind:{a}"})
        out.append(r)
    return out


def measure(fleet: list[Registrar], pid: int, interval: float, seconds: float) -> dict[str, float]:
    """Sweep every registrar once per interval (spread evenly) for `seconds`; the server's CPU."""
    period = interval / len(fleet)
    done = failed = 0
    lock = threading.Lock()

    def one(r: Registrar) -> None:
        nonlocal done, failed
        ok = r.sweep()
        with lock:
            done += 1
            failed += not ok

    with ThreadPoolExecutor(16) as pool:
        _, cpu0 = hub_usage(pid)
        t0 = time.monotonic()
        i = 0
        while (now := time.monotonic()) - t0 < seconds:
            due = t0 + i * period
            if due > now:
                time.sleep(due - now)
            pool.submit(one, fleet[i % len(fleet)])
            i += 1
        elapsed = time.monotonic() - t0
        _, cpu1 = hub_usage(pid)
    busy = cpu1 - cpu0
    return {"sweeps_per_s": round(done / elapsed, 1), "failed": failed,
            "server_cpu_percent": round(100 * busy / elapsed, 1),
            "server_us_per_sweep": round(1e6 * busy / max(done, 1))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure both sweeps against one name server; print and return the figures."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--names", type=int, default=8, help="names per node (a spoke registers 7-10)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between two sweeps of one node")
    p.add_argument("--seconds", type=float, default=10.0, help="time per measurement")
    args = p.parse_args(argv)
    if not 1 <= args.nodes <= 5000 or not 1 <= args.names <= len(ACTORS) or not 1 <= args.seconds <= 120:
        p.error(f"--nodes 1..5000, --names 1..{len(ACTORS)}, --seconds 1..120")
    from nameserver.pyro import configure

    configure()
    cpus = sorted(os.sched_getaffinity(0))
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    server = ctx.Process(target=_serve, args=(free_port(), cpus[-1], ready), daemon=True)
    server.start()
    try:
        port = ready.get(timeout=60)
        if len(cpus) > 1:
            os.sched_setaffinity(0, set(cpus[:-1]))
        own = registrars(Registrar, port, args.nodes, args.names)
        with ThreadPoolExecutor(16) as pool:  # the fleet's names, registered once
            assert all(pool.map(lambda r: r.sweep(), own))
        fleet = registrars(FleetListing, port, args.nodes, args.names)
        result = {"nodes": args.nodes, "names": args.nodes * args.names, "interval_s": args.interval,
                  "own_listing": measure(own, server.pid, args.interval, args.seconds),
                  "fleet_listing": measure(fleet, server.pid, args.interval, args.seconds)}
    finally:
        server.terminate()
        server.join(10)
    print(f"name server with {result['names']:,} names: {args.nodes} nodes sweeping every {args.interval:g} s "
          f"(server on its own CPU)")
    for key, label in (("own_listing", "own names listed (now)"), ("fleet_listing", "whole fleet listed (before)")):
        r = result[key]
        print(f"  {label:<28} {r['sweeps_per_s']:>7} sweeps/s, server {r['server_cpu_percent']:>5}% of a core, "
              f"{r['server_us_per_sweep']:>6} µs a sweep, {r['failed']} failed")
    return result


if __name__ == "__main__":
    main()
