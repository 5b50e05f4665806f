"""Three hubs: leader fail-over time, ingest against one hub, and what a hub pays for its peers at rest.

Starts three hub processes (Raft through pysyncobj, anti-entropy between them) and one lone hub
on 127.0.0.1, all in mock mode, and measures:

- fail-over: SIGKILL the leader `--kills` times (restarting it in between); the time from
  the kill until both survivors name the same new leader with a majority behind it, polled
  every 20 ms through GET /api/cluster (median and worst);
- ingest: one client pushes 50 batches x 10 readings per call, msgpack, for `--seconds`,
  to the lone hub, then to the three hubs as a spoke does (every call to every hub, each
  hub on its own thread); a batch counts once two of the three acknowledged its commit.
  The ratio is three hubs' rate over one hub's, on the same machine in the same run;
- rest: RSS and CPU of a hub of the three and of the lone hub, idle, over `--rest` seconds.

    python -m bench.bench_hubs [--kills 10] [--seconds 5] [--rest 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from Pyro5.api import Proxy

from bench.bench_ingest import BATCHES_PER_CALL, READINGS_PER_BATCH, make_batches

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
HUBS = ("hub1", "hub2", "hub3")
SECRET = "bench-cluster-secret-0123456789abcdef"


def free_pair() -> int:
    """A free port whose successor is free too (a hub's Raft listens there)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind((HOST, port))
                b.bind((HOST, port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two free ports in a row")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Hub:
    """One hub process."""

    def __init__(self, tmp: Path, name: str, ns: int, web: int, hosts: list[str] | None) -> None:
        self.name, self.ns, self.web = name, ns, web
        lines = ["[node]", f'name = "{name}"', 'role = "hub"', 'hal = "mock"', f'state_dir = "{tmp / name}"',
                 "[hub]", f'host = "{HOST}"', f"nameserver_port = {ns}"]
        if hosts:
            lines += [f"hosts = {json.dumps(hosts)}", f'cluster_secret_file = "{tmp / "secret"}"']
        lines += ["[web]", f'host = "{HOST}"', f"port = {web}"]
        self.config = tmp / f"{name}.toml"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Hub:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "actors.cli", "node", "--config", str(self.config)],
                                         cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def cluster(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.web}/api/cluster", timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def aggregator(self) -> Proxy:
        proxy = Proxy(f"PYRONAME:harvester.{self.name}.aggregator@{HOST}:{self.ns}")
        proxy._pyroTimeout = 30
        return proxy


def agreed_leader(hubs: list[Hub]) -> str | None:
    """The hub among `hubs` that all of them name as leader with a majority, else None."""
    views = [h.cluster() for h in hubs]
    if not all(v and v.get("has_quorum") for v in views):
        return None
    names = {v["leader"] for v in views}  # type: ignore[index]
    return names.pop() if len(names) == 1 and names <= {h.name for h in hubs} else None


def wait(predicate: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout} s")


def failover(hubs: dict[str, Hub], kills: int) -> dict[str, Any]:
    times = []
    for i in range(kills):
        leader = wait(lambda: agreed_leader(list(hubs.values())), 60, "three hubs agreeing on a leader")
        hubs[leader].kill()
        t0 = time.perf_counter()
        rest = [h for n, h in hubs.items() if n != leader]
        wait(lambda rest=rest: agreed_leader(rest), 30, "a new leader")
        times.append(time.perf_counter() - t0)
        print(f"kill {i + 1}: {leader} killed, new leader in {times[-1]:.2f} s", flush=True)
        hubs[leader].start()
    return {"kills": kills, "median_s": round(statistics.median(times), 2), "worst_s": round(max(times), 2),
            "all_s": [round(t, 2) for t in times]}


def ingest(targets: list[Hub], seconds: float, node: str) -> float:
    """Readings/s committed by a majority of `targets`, one client thread per hub."""
    majority = len(targets) // 2 + 1
    done = [0] * len(targets)  # calls acknowledged per hub
    stop = threading.Event()
    calls: list[list[dict[str, Any]]] = []
    lock = threading.Lock()

    def call(i: int) -> list[dict[str, Any]]:
        with lock:
            while len(calls) <= i:
                calls.append(make_batches(node, 1 + len(calls) * BATCHES_PER_CALL))
            return calls[i]

    def pusher(k: int) -> None:
        with targets[k].aggregator() as agg:
            agg.hello({"node": node, "role": "spoke", "profile": "wasm", "push_interval": 1.0}, time.time())
            i = 0
            while not stop.is_set() and i < 100_000:
                agg.push(call(i), time.time())
                i += 1
                done[k] = i

    threads = [threading.Thread(target=pusher, args=(k,), daemon=True) for k in range(len(targets))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    committed = sorted(done, reverse=True)[majority - 1]
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join(timeout=60)
    return committed * BATCHES_PER_CALL * READINGS_PER_BATCH / elapsed


def usage(pid: int, seconds: float) -> dict[str, float]:
    """RSS (MB) and CPU (% of one core) of a process over `seconds`."""
    tick = os.sysconf("SC_CLK_TCK")

    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    c0, t0 = cpu(), time.perf_counter()
    time.sleep(seconds)
    c1, t1 = cpu(), time.perf_counter()
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS")) / 1024
    return {"rss_mb": round(rss, 1), "cpu_percent": round(100 * (c1 - c0) / (t1 - t0), 2)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rest", type=float, default=20.0)
    args = p.parse_args(argv)
    if not 1 <= args.kills <= 50 or not 1 <= args.seconds <= 60 or not 5 <= args.rest <= 300:
        p.error("--kills 1..50, --seconds 1..60, --rest 5..300")
    tmp = Path(tempfile.mkdtemp(prefix="bench-hubs-"))
    (tmp / "secret").write_text(SECRET)
    ports = {h: free_pair() for h in HUBS}
    hosts = [f"{HOST}:{ports[h]}" for h in HUBS]
    hubs = {h: Hub(tmp, h, ports[h], free_port(), hosts) for h in HUBS}
    lone = Hub(tmp, "lone", free_pair(), free_port(), None)
    result: dict[str, Any] = {}
    try:
        for h in [*hubs.values(), lone]:
            h.start()
        wait(lambda: agreed_leader(list(hubs.values())) and lone.cluster(), 90, "the hubs to start", 0.2)
        time.sleep(3)  # past start-up work (first polls, plugin scans)
        at_rest = {"one_of_three": usage(hubs["hub1"].proc.pid, args.rest),  # type: ignore[union-attr]
                   "lone": usage(lone.proc.pid, args.rest)}  # type: ignore[union-attr]
        at_rest["rss_paid_mb"] = round(at_rest["one_of_three"]["rss_mb"] - at_rest["lone"]["rss_mb"], 1)
        at_rest["cpu_paid_percent"] = round(at_rest["one_of_three"]["cpu_percent"] - at_rest["lone"]["cpu_percent"], 2)
        result["rest"] = at_rest
        print(f"at rest: a hub of three {at_rest['one_of_three']}, a lone hub {at_rest['lone']}", flush=True)
        one = ingest([lone], args.seconds, "bench1")
        three = ingest(list(hubs.values()), args.seconds, "bench3")
        result["ingest"] = {"one_hub_readings_per_s": round(one), "three_hubs_readings_per_s": round(three),
                            "ratio": round(three / one, 2)}
        print(f"ingest: one hub {one:,.0f} readings/s, three hubs {three:,.0f} readings/s "
              f"(ratio {three / one:.2f})", flush=True)
        result["failover"] = failover(hubs, args.kills)
        print(f"fail-over: median {result['failover']['median_s']} s, worst {result['failover']['worst_s']} s "
              f"over {args.kills} kills", flush=True)
    finally:
        for h in [*hubs.values(), lone]:
            h.kill(signal.SIGTERM)
    shutil.rmtree(tmp, ignore_errors=True)  # a failed run keeps its dir: the logs are there
    return result


if __name__ == "__main__":
    main()
