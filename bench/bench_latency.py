"""Pyro5 call latency for a sensor: latest() (cached) and read() (measures now), p50/p99,
over one kept connection and with a new connection per call. Loopback only; bounded."""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.loadgen import start_hub


def measure(fn, n: int) -> dict[str, float]:
    """p50/p99 in ms of n calls of fn()."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(1000 * (time.perf_counter() - t0))
    q = statistics.quantiles(samples, n=100)
    return {"p50_ms": round(q[49], 3), "p99_ms": round(q[98], 3)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Start a hub node and call its monitor sensor."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--calls", type=int, default=500)
    args = p.parse_args(argv)
    from Pyro5.api import Proxy

    from nameserver.pyro import configure

    configure()
    tmp = Path(tempfile.mkdtemp(prefix="harvester-lat-"))
    hub, ns, _ = start_hub(tmp)
    try:
        uri = f"PYRONAME:harvester.hub.monitor@127.0.0.1:{ns}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with Proxy(uri) as warm:
                    warm._pyroTimeout = 5
                    warm.latest()
                break
            except Exception:  # not polled or not registered yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with Proxy(uri) as proxy:
            proxy._pyroTimeout = 5
            kept_latest = measure(proxy.latest, args.calls)
            kept_read = measure(proxy.read, args.calls)

        def fresh() -> None:
            with Proxy(uri) as one:
                one._pyroTimeout = 5
                one.latest()

        new_conn = measure(fresh, max(50, args.calls // 5))
    finally:
        hub.terminate()
        hub.wait(30)
    shutil.rmtree(tmp, ignore_errors=True)  # a failed run keeps its dir: the logs are there
    result = {"sensor_latest": kept_latest, "sensor_read": kept_read, "sensor_latest_new_connection": new_conn}
    print("Pyro5 sensor call latency (msgpack, loopback, thread server)")
    for name, r in result.items():
        print(f"  {name:<32} p50 {r['p50_ms']:>7.3f} ms   p99 {r['p99_ms']:>7.3f} ms")
    return result


if __name__ == "__main__":
    main()
