"""GET /api/readings latency with 100 simulated nodes x 10 sensors while they push over HTTP.

The hub's web app (real Hub, SQLite store, tokens, waitress) runs in its own process; push
load comes from other processes (one HTTP /push per node per interval, each batch one
reading per sensor and quantity), and one dashboard client reads /api/readings back to
back. Prints p50/p99 (target: p99 <= 50 ms). Loopback only; every loop is bounded."""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

NODES = 100
SENSORS = 10
QUANTITIES = [("temperature", "°C", 21.5), ("humidity", "%", 40.0)]


def batch(node: str, seq: int) -> dict[str, Any]:
    """One push: every sensor of the node, both quantities, now."""
    now = time.time()
    readings = [{"sensor": f"s{s}", "quantity": q, "value": v + (seq % 10) / 10, "unit": unit, "ts": now}
                for s in range(SENSORS) for q, unit, v in QUANTITIES]
    return {"node": node, "seq": seq, "readings": readings}


def _serve(state: str, ready: Any) -> None:
    """The hub's web app with NODES node tokens, in this (child) process, until terminated."""
    from waitress.server import create_server

    from actors.hub.state import Hub
    from actors.hub.store import Store
    from actors.hub.tokens import Tokens
    from web.app import create_app

    tokens = Tokens(Path(state) / "tokens.json")
    names = {f"n{i:03d}": tokens.ensure_node(f"n{i:03d}") for i in range(NODES)}
    hub = Hub(Store(Path(state) / "hub.sqlite3"))
    server = create_server(create_app(hub, tokens), host="127.0.0.1", port=0, threads=8)
    ready.put(json.dumps({"port": server.effective_port, "tokens": names}))
    server.run()


def _push(port: int, tokens: dict[str, str], interval: float, seconds: float, done: Any) -> None:
    """Each of `tokens`' nodes pushes one batch every `interval` s, for `seconds`; reports batches sent."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    seqs = dict.fromkeys(tokens, 2)  # seq 1 was the warm-up push
    sent, t0 = 0, time.monotonic()
    next_round = t0
    while time.monotonic() - t0 < seconds:
        for node, token in tokens.items():
            body = json.dumps(batch(node, seqs[node]))
            conn.request("POST", "/push", body=body, headers={"Content-Type": "application/json",
                                                              "Authorization": f"Bearer {token}"})
            res = conn.getresponse()
            res.read()
            if res.status != 200:
                raise RuntimeError(f"push failed: {res.status}")
            seqs[node] += 1
            sent += 1
        next_round += interval
        time.sleep(max(0.0, next_round - time.monotonic()))
    conn.close()
    done.put(sent)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure and print /api/readings p50/p99 under push load; return the figures."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0, help="measurement time")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between two pushes of one node")
    p.add_argument("--pushers", type=int, default=4, help="push processes (nodes are split between them)")
    p.add_argument("--max-requests", type=int, default=20_000, help="upper bound of /api/readings requests")
    args = p.parse_args(argv)
    ctx = mp.get_context("spawn")
    ready, done = ctx.Queue(), ctx.Queue()
    state = tempfile.mkdtemp(prefix="bench-dashboard-")
    server = ctx.Process(target=_serve, args=(state, ready), daemon=True)
    server.start()
    pushers: list[Any] = []
    try:
        info = json.loads(ready.get(timeout=60))
        port, tokens = info["port"], info["tokens"]
        # every node pushes once before timing, so /api/readings carries the full fleet
        _push_once(port, tokens)
        groups = [dict(list(tokens.items())[i::args.pushers]) for i in range(args.pushers)]
        pushers = [ctx.Process(target=_push, args=(port, g, args.interval, args.seconds + 1, done), daemon=True)
                   for g in groups]
        for proc in pushers:
            proc.start()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        times, size, t0 = [], 0, time.monotonic()
        while time.monotonic() - t0 < args.seconds and len(times) < args.max_requests:
            start = time.perf_counter()
            conn.request("GET", "/api/readings")
            res = conn.getresponse()
            body = res.read()
            times.append((time.perf_counter() - start) * 1000)
            if res.status != 200:
                raise RuntimeError(f"/api/readings answered {res.status}")
            size = len(body)
        conn.close()
        elapsed = time.monotonic() - t0
        nodes = len(json.loads(body)["nodes"])
        pushed = sum(done.get(timeout=args.seconds + 60) for _ in pushers)
    finally:
        for proc in pushers:
            proc.join(args.seconds + 30)
            if proc.is_alive():
                proc.terminate()
        server.terminate()
        server.join(10)
    shutil.rmtree(state, ignore_errors=True)  # a failed run keeps its dir: the logs are there
    times.sort()
    result = {
        "dashboard_readings_p50_ms": round(statistics.median(times), 2),
        "dashboard_readings_p99_ms": round(times[int(0.99 * (len(times) - 1))], 2),
        "dashboard_readings_max_ms": round(times[-1], 2),
        "dashboard_readings_requests": len(times),
        "dashboard_readings_body_bytes": size,
        "dashboard_push_batches_per_s": round(pushed / (args.seconds + 1), 1),
    }
    print(f"GET /api/readings: {nodes} nodes x {SENSORS} sensors x {len(QUANTITIES)} quantities, "
          f"{size / 1024:.0f} KiB per answer, {len(times)} requests in {elapsed:.1f} s, one client")
    print(f"push load: {result['dashboard_push_batches_per_s']} batches/s "
          f"({result['dashboard_push_batches_per_s'] * SENSORS * len(QUANTITIES):.0f} readings/s) "
          f"from {args.pushers} processes over HTTP /push")
    print(f"p50 {result['dashboard_readings_p50_ms']} ms   p99 {result['dashboard_readings_p99_ms']} ms   "
          f"max {result['dashboard_readings_max_ms']} ms   (target p99 <= 50 ms)")
    return result


def _push_once(port: int, tokens: dict[str, str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for node, token in tokens.items():
        conn.request("POST", "/push", body=json.dumps(batch(node, 1)),
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        res = conn.getresponse()
        res.read()
        if res.status != 200:
            raise RuntimeError(f"warm-up push failed: {res.status}")
    conn.close()


if __name__ == "__main__":
    main()
