"""The hub's name server under a fleet: the nodes' registration sweeps, and the cleaner.

Every node keeps its names registered by sweeping the hub's name server every
`agent.register_interval` seconds (5 by default): one listing of its own names, and a
registration for any name missing or changed. The name server also checks, every few seconds,
that the daemons its names point at still accept connections, and forgets the names of those
that stopped.

This runs a name server (Harvester's, as the hub embeds it) alone on one CPU, fills it with
--nodes nodes of --names names each, and measures its CPU in the same run as it is now and as
it was before:
- sweeps: now, a connection kept between sweeps and a listing by prefix from a sorted index;
  before, a new connection every sweep and Pyro5's listing, a pass over every name held. The
  sweeps run from this process on the other CPU, with the real Registrar, each node at its
  interval; the cleaner is off.
- cleaner: now, one connection per daemon address, all at once; before, Pyro5's, one
  connection per name, in turn. Every node's daemon is a socket this process listens on and
  accepts from; no sweeps.
Loopback only; bounded by --seconds per measurement."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from Pyro5.client import Proxy

from bench.loadgen import ACTORS, Daemons, free_port, hub_usage
from nameserver.registry import Registrar


def _serve(port: int, cpu: int, mode: str, ready: Any) -> None:
    """A name server on `cpu`: mode `now` or `before` (Pyro5's storage), with `+cleaner` its cleaner."""
    os.sched_setaffinity(0, {cpu})
    from Pyro5 import config
    from Pyro5.nameserver import AutoCleaner, MemoryStorage

    from nameserver.server import EmbeddedNameServer

    server = EmbeddedNameServer("127.0.0.1", port)
    ours = server.daemon.cleaner_thread
    plain = ours.nameserver
    if mode.startswith("before"):
        storage = MemoryStorage()
        for name, entry in plain.storage.items():
            storage[name] = entry
        plain.storage = server.daemon.nameserver.storage = storage
    if mode != "now+cleaner":
        ours.stop = True
        server.daemon.cleaner_thread = None
    if mode == "before+cleaner":  # Pyro5's cleaner as the hub ran it: every 5 s, names gone after 10 s
        config.NS_AUTOCLEAN = 5.0
        AutoCleaner.max_unreachable_time, AutoCleaner.loop_delay = 10.0, 1.0
        server.daemon.cleaner_thread = AutoCleaner(plain)
        server.daemon.cleaner_thread.start()
    server.start()
    ready.put(server.port)
    threading.Event().wait()


@contextmanager
def name_server(mode: str, cpu: int) -> Any:
    """A name server process in `mode`; yields (port, pid)."""
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(free_port(), cpu, mode, ready), daemon=True)
    proc.start()
    try:
        yield ready.get(timeout=60), proc.pid
    finally:
        proc.terminate()
        proc.join(10)


class NewConnection(Registrar):
    """The sweep as it was: a new connection to the name server every sweep."""

    def _proxy(self, uri: str) -> tuple[Proxy, bool]:
        self._drop(uri)
        return super()._proxy(uri)


def registrars(cls: type[Registrar], port: int, nodes: int, names: int, daemons: list[int]) -> list[Registrar]:
    out = []
    for n in range(nodes):
        r = cls([("127.0.0.1", port)])
        for a in ACTORS[:names]:
            r.add(f"harvester.spoke{n:04d}.{a}", f"PYRO:{a}@127.0.0.1:{daemons[n]}",
                  {f"node:spoke{n:04d}", f"kind:{a}"})
        out.append(r)
    return out


def register_all(fleet: list[Registrar]) -> None:
    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(lambda r: r.sweep(), fleet))


def measure_sweeps(fleet: list[Registrar], pid: int, interval: float, seconds: float) -> dict[str, float]:
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


def measure_cleaner(pid: int, daemons: Daemons, seconds: float) -> dict[str, float]:
    """The server's CPU and the connections it made while its cleaner ran for `seconds`."""
    _, cpu0 = hub_usage(pid)
    accepted0, t0 = daemons.accepted, time.monotonic()
    time.sleep(seconds)  # the cleaner runs on its own clock: this samples a window of it
    elapsed = time.monotonic() - t0
    _, cpu1 = hub_usage(pid)
    return {"server_cpu_percent": round(100 * (cpu1 - cpu0) / elapsed, 1),
            "connections_per_s": round((daemons.accepted - accepted0) / elapsed, 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure the sweeps and the cleaner, now and as before; print and return the figures."""
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
    server_cpu = cpus[-1]
    if len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus[:-1]))
    result: dict[str, Any] = {"nodes": args.nodes, "names": args.nodes * args.names, "interval_s": args.interval}
    daemons = Daemons(args.nodes)
    try:
        for mode, cls in (("now", Registrar), ("before", NewConnection)):
            with name_server(mode, server_cpu) as (port, pid):
                fleet = registrars(cls, port, args.nodes, args.names, daemons.ports)
                register_all(fleet)
                result[f"sweeps_{mode}"] = measure_sweeps(fleet, pid, args.interval, args.seconds)
                for r in fleet:
                    r._proxies.clear()  # their connections close with the server
        for mode in ("now", "before"):
            with name_server(f"{mode}+cleaner", server_cpu) as (port, pid):
                register_all(registrars(Registrar, port, args.nodes, args.names, daemons.ports))
                result[f"cleaner_{mode}"] = measure_cleaner(pid, daemons, max(args.seconds, 11.0))
    finally:
        daemons.close()
    print(f"name server with {result['names']:,} names of {args.nodes} nodes (server on its own CPU)")
    for mode, label in (("now", "now"), ("before", "before")):
        r = result[f"sweeps_{mode}"]
        print(f"  sweeps every {args.interval:g} s, {label:<7} {r['sweeps_per_s']:>7} sweeps/s, server "
              f"{r['server_cpu_percent']:>5}% of a core, {r['server_us_per_sweep']:>6} µs a sweep, {r['failed']} failed")
    for mode, label in (("now", "now"), ("before", "before")):
        r = result[f"cleaner_{mode}"]
        print(f"  cleaner, {label:<7} server {r['server_cpu_percent']:>5}% of a core, "
              f"{r['connections_per_s']:>7} connections/s to the nodes' daemons")
    return result


if __name__ == "__main__":
    main()
