"""Export to a time-series engine: can the hub's exporter keep up with its ingest, and what does it cost?

1. Throughput. The hub's ingest ceiling is measured in the same run two ways: end to end as
   bench_ingest does it (one Pyro5 client pushing 50 batches x 10 readings per call to a hub
   in a child process: the path spokes use), and in process (Hub.push with the same batches,
   no transport: the store's own ceiling, a stricter bar). Then a fresh store is filled with
   `--readings` readings and drained by an Exporter (default batch_size, 5,000 per page) into
   (a) a VictoriaMetrics the bench starts (/usr/bin/victoria-metrics) and (b) a discarding
   HTTP sink in a child process (the exporter's own ceiling, without the engine's cost). Each
   drain is checked: the exporter's sent count, the store's backlog, and the receiver's count
   (VictoriaMetrics' vm_rows_inserted_total{type="influx"}; the sink's line count) must all
   equal the filled count, or the bench fails rather than report a broken export's speed.
2. CPU at the demo's rate. The demo fleet's readings/s is computed from the demo configs
   (actors/cli/demo_configs/*.toml): per sensor, quantities of its kind (hal.sensor.SENSOR_KINDS;
   a network sensor has them per target, and the agent adds the hub as a target on a spoke)
   divided by its poll interval. The exporter's CPU per reading is the draining thread's CPU
   time (time.thread_time: no idle, no receiver) during the bulk drain into the sink; times the
   demo's rate, as % of one core (a lower bound: at the demo's rate a page holds a dozen
   readings, so per-page costs dominate). Then the trickle: a feeder pushes at the demo's rate
   (each node's batch every push interval through Hub.push, the hub's own through commit_own)
   for `--trickle` s, once without and once with an exporter thread (start(), flush_interval 1 s)
   sending to the sink; the process CPU of both runs and the exporter thread's own CPU.

Loopback only; bounded in time and count; every child process and temp dir is removed.

    python -m bench.bench_export [--seconds 3] [--readings 200000] [--trickle 10]
"""

from __future__ import annotations

import argparse
import http.server
import json
import math
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from actors.hub.export import Exporter
from actors.hub.store import Batch, Row, Store
from actors.node.config import ExportTarget
from bench.bench_ingest import BATCHES_PER_CALL, QUANTITIES, READINGS_PER_BATCH, make_batches

ROOT = Path(__file__).resolve().parents[1]
VM_BINARY = Path("/usr/bin/victoria-metrics")
DEMO_CONFIGS = ROOT / "actors" / "cli" / "demo_configs"
MAX_READINGS = 2_000_000
DRAIN_LIMIT_S = 60.0  # a drain slower than this fails the bench instead of running on


# -- receivers ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return answer.read().decode()


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class VictoriaMetrics:
    """A single-node VictoriaMetrics on a free loopback port, in a temp dir; stopped and removed on exit."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-export-vm-"))
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/write"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> VictoriaMetrics:
        try:
            self._log = open(self.dir / "vm.log", "wb")  # noqa: SIM115 (closed in __exit__)
            self.proc = subprocess.Popen(
                [str(VM_BINARY), "-storageDataPath", str(self.dir / "data"),
                 "-httpListenAddr", f"127.0.0.1:{self.port}", "-loggerLevel", "ERROR"],
                stdout=self._log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 20
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"victoria-metrics exited with {self.proc.returncode}: "
                                       f"{(self.dir / 'vm.log').read_text()[-500:]}")
                try:
                    if _get(f"{self.base}/health", 1.0).strip() == "OK":
                        return self
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("victoria-metrics did not answer /health within 20 s")
                time.sleep(0.1)
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_log", None) is not None:
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def rows_inserted(self) -> int:
        """vm_rows_inserted_total{type="influx"} from /metrics."""
        for line in _get(f"{self.base}/metrics").splitlines():
            if line.startswith('vm_rows_inserted_total{type="influx"}'):
                return int(float(line.split()[-1]))
        raise RuntimeError('victoria-metrics /metrics has no vm_rows_inserted_total{type="influx"}')

    def cpu_s(self) -> float:
        assert self.proc is not None
        return _proc_cpu_s(self.proc.pid)


def _sink_serve(ready: Any) -> None:
    """A write endpoint that accepts and discards line protocol (in a child process); GET /count."""
    lock = threading.Lock()
    counts = {"lines": 0, "requests": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                counts["lines"] += body.count(b"\n")
                counts["requests"] += 1
            self.send_response(204)
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            with lock:
                text = json.dumps(counts).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ready.put(server.server_address[1])
    server.serve_forever()


class DiscardSink:
    """The discarding write endpoint in a child process (its CPU is not this process's)."""

    def __enter__(self) -> DiscardSink:
        ctx = mp.get_context("spawn")
        ready = ctx.Queue()
        self.proc = ctx.Process(target=_sink_serve, args=(ready,), daemon=True)
        self.proc.start()
        try:
            port = ready.get(timeout=30)
        except BaseException:
            self.__exit__()
            raise
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/write"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.proc.terminate()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)

    def counts(self) -> dict[str, int]:
        return json.loads(_get(f"{self.base}/count"))


# -- 1. throughput -----------------------------------------------------------------------------
def ingest_direct(seconds: float, max_calls: int) -> float:
    """Readings/s through Hub.push (validation, commit, in-memory view) in this process, no transport."""
    from actors.hub.state import Hub

    tmp = Path(tempfile.mkdtemp(prefix="bench-export-ingest-"))
    store = Store(tmp / "hub.sqlite3")
    try:
        hub = Hub(store)
        seq, readings, t0 = 1, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds and seq < max_calls * BATCHES_PER_CALL:
            answer = hub.push(make_batches("bench", seq), time.time())
            assert len(answer["acked"]) == BATCHES_PER_CALL
            seq += BATCHES_PER_CALL
            readings += BATCHES_PER_CALL * READINGS_PER_BATCH
        return readings / (time.perf_counter() - t0)
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


def ingest_pyro(seconds: float, max_calls: int) -> float:
    """bench_ingest's measurement: one Pyro5 client pushing to a hub in a child process."""
    from bench.bench_ingest import run_pyro

    return run_pyro("pyro", seconds, max_calls)


def fill(store: Store, n: int) -> int:
    """n readings as batches of 10 from four nodes (one reading in 50 unavailable); returns n stored."""
    nodes = ["pi4", "pizero", "hub", "spare"]
    base = time.time() - 3600
    per_call, k, seq = 1000, 0, 0
    while k < n:
        batches = []
        for _ in range(per_call):
            if k >= n:
                break
            seq += 1
            rows = []
            for j in range(min(READINGS_PER_BATCH, n - k)):
                q, unit, v = QUANTITIES[j % len(QUANTITIES)]
                bad = (k + j) % 50 == 49
                rows.append(Row(f"s{j // len(QUANTITIES)}", q, None if bad else v + (k % 97) / 10, unit,
                                base + (k + j) * 0.01, "unavailable" if bad else "ok", "bus error" if bad else None))
            batches.append(Batch(nodes[seq % len(nodes)], seq, rows, []))
            k += len(rows)
        store.commit_batches(batches, time.time(), {b: time.time() for b in nodes})
    count = store.count()
    if count != n:
        raise RuntimeError(f"filled {count} readings, meant {n}")
    return count


def drain(name: str, url: str, store: Store, expected: int) -> dict[str, Any]:
    """Run an Exporter's rounds until the store is drained; readings/s and this thread's CPU per reading."""
    e = Exporter(ExportTarget(name, url), store.path, store)
    try:
        sent, t0, c0 = 0, time.perf_counter(), time.thread_time()
        while True:
            n = e.step()
            if e.stopped or e.last_error:
                raise RuntimeError(f"export {name} failed: {e.last_error}")
            sent += n
            if n == 0:
                break
            if time.perf_counter() - t0 > DRAIN_LIMIT_S:
                raise RuntimeError(f"export {name} did not drain within {DRAIN_LIMIT_S:.0f} s ({sent} sent)")
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        backlog = e.backlog()[0]
        if sent != expected or e.sent != expected or backlog:
            raise RuntimeError(f"export {name}: sent {sent} (counter {e.sent}), backlog {backlog}, "
                               f"filled {expected}")
    finally:
        e.stop()
    return {"readings_per_s": round(sent / wall), "seconds": round(wall, 2), "sent": sent,
            "cpu_us_per_reading": round(cpu / sent * 1e6, 2), "pages": math.ceil(sent / e.target.batch_size)}


# -- 2. the demo's rate ------------------------------------------------------------------------
def demo_plan() -> list[dict[str, Any]]:
    """Per demo node: its push interval and (sensor, quantities, interval) from its config."""
    from actors.node.config import load_config
    from hal.sensor import SENSOR_KINDS

    plan = []
    for path in sorted(DEMO_CONFIGS.glob("*.toml")):
        cfg = load_config(path)
        sensors = []
        for sc in cfg.sensors:
            quantities = SENSOR_KINDS[sc.kind].quantities
            if sc.kind == "network":  # per target; a spoke's agent adds the hub (actors.node.agent)
                labels = list(sc.params.get("targets") or {})
                if not cfg.is_hub and "hub" not in labels:
                    labels.append("hub")
                sensors += [(f"{sc.name}-{label}", quantities, sc.interval) for label in labels]
            else:
                sensors.append((sc.name, quantities, sc.interval))
        plan.append({"node": cfg.name, "hub": cfg.is_hub, "push_interval": cfg.push_interval, "sensors": sensors})
    return plan


def demo_rate(plan: list[dict[str, Any]]) -> float:
    return sum(len(q) / interval for n in plan for _, q, interval in n["sensors"])


def feed(hub: Any, plan: list[dict[str, Any]], seconds: float) -> int:
    """Push the demo's readings for `seconds`: each node every push interval (staggered), with the
    reads its sensors made since its last push; returns readings committed."""
    from hal.readings import QUANTITIES as QUANTITY

    t0 = time.time()
    nodes = [{**n, "seq": 0, "last": 0.0, "next": 0.3 + i * 0.7} for i, n in enumerate(plan)]
    total = 0
    while True:
        node = min(nodes, key=lambda x: x["next"])
        if node["next"] > seconds:
            return total
        delay = t0 + node["next"] - time.time()
        if delay > 0:
            time.sleep(delay)
        now, at = time.time(), node["next"]
        readings = []
        for sensor, quantities, interval in node["sensors"]:
            # the reads at 0, interval, 2 x interval ... that fell in [last, at)
            reads = math.ceil(at / interval) - math.ceil(node["last"] / interval)
            for r in range(reads):
                readings += [{"node": node["node"], "sensor": sensor, "quantity": q,
                              "value": (QUANTITY[q].low + QUANTITY[q].high) / 2 + r / 10, "unit": QUANTITY[q].unit,
                              "ts": now - r * interval, "quality": "ok", "reason": None} for q in quantities]
        node["last"], node["next"] = at, at + node["push_interval"]
        if not readings:
            continue
        node["seq"] += 1
        if node["hub"]:
            hub.store.commit_own(node["node"], [Row(x["sensor"], x["quantity"], x["value"], x["unit"], x["ts"],
                                                    "ok", None) for x in readings], [], now)
        else:
            hub.push([{"node": node["node"], "seq": node["seq"], "readings": readings}], now)
        total += len(readings)


def trickle(plan: list[dict[str, Any]], seconds: float, sink: DiscardSink | None) -> dict[str, Any]:
    """Process CPU while feeding at the demo's rate, with an exporter thread to `sink` or without one."""
    from actors.hub.state import Hub

    tmp = Path(tempfile.mkdtemp(prefix="bench-export-trickle-"))
    store = Store(tmp / "hub.sqlite3")
    e = None
    try:
        hub = Hub(store)
        before = sink.counts() if sink else None
        if sink is not None:
            e = Exporter(ExportTarget("trickle", sink.url, flush_interval=1.0), store.path, store)
            e.start()
            assert e._thread is not None and e._thread.ident is not None
            clock = time.pthread_getcpuclockid(e._thread.ident)
            t_cpu0 = time.clock_gettime(clock)
        w0, c0 = time.perf_counter(), time.process_time()
        fed = feed(hub, plan, seconds)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        out: dict[str, Any] = {"seconds": round(wall, 1), "fed": fed, "readings_per_s": round(fed / wall, 2),
                               "process_cpu_percent": round(cpu / wall * 100, 3)}
        if e is not None and sink is not None and before is not None:
            thread_cpu = time.clock_gettime(clock) - t_cpu0
            e.stop()
            e.step()  # what came after its last round
            after = sink.counts()
            got = after["lines"] - before["lines"]
            if e.stopped or e.last_error or e.sent != fed or got != fed:
                raise RuntimeError(f"trickle export: fed {fed}, exporter sent {e.sent}, sink got {got}, "
                                   f"error {e.last_error}")
            out.update({"exporter_thread_cpu_percent": round(thread_cpu / wall * 100, 3),
                        "pages": after["requests"] - before["requests"]})
        return out
    finally:
        if e is not None:
            e.stop()
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


# -- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, print a summary, return the figures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3.0, help="time per ingest measurement")
    p.add_argument("--max-calls", type=int, default=20_000, help="upper bound of push calls per ingest measurement")
    p.add_argument("--readings", type=int, default=200_000, help=f"readings to fill and drain (<= {MAX_READINGS:,})")
    p.add_argument("--trickle", type=float, default=10.0, help="seconds per demo-rate run (with / without exporter)")
    p.add_argument("--quick", action="store_true", help="100,000 readings, 2 s ingest, 5 s trickle runs")
    args = p.parse_args(argv)
    if args.quick:
        args.readings, args.seconds, args.trickle = min(args.readings, 100_000), min(args.seconds, 2.0), \
            min(args.trickle, 5.0)
    n = max(1, min(args.readings, MAX_READINGS))
    r: dict[str, Any] = {}

    r["ingest_pyro_readings_per_s"] = round(ingest_pyro(args.seconds, args.max_calls))
    r["ingest_direct_readings_per_s"] = round(ingest_direct(args.seconds, args.max_calls))
    r["ingest_ceiling_from"] = ("bench_ingest.run_pyro('pyro'): one Pyro5 client, 50 batches x 10 readings per "
                                "call, hub in a child process; stricter: Hub.push in process, same batches")

    tmp = Path(tempfile.mkdtemp(prefix="bench-export-"))
    store = Store(tmp / "hub.sqlite3")
    try:
        t0 = time.perf_counter()
        r["filled"] = fill(store, n)
        r["fill_seconds"] = round(time.perf_counter() - t0, 2)
        if VM_BINARY.exists():
            with VictoriaMetrics() as vm:
                vm_cpu0 = vm.cpu_s()
                d = drain("vm", vm.url, store, n)
                inserted, deadline = vm.rows_inserted(), time.monotonic() + 5
                while inserted < n and time.monotonic() < deadline:
                    time.sleep(0.2)
                    inserted = vm.rows_inserted()
                vm_cpu = vm.cpu_s() - vm_cpu0
            if inserted != n:
                raise RuntimeError(f'victoria-metrics counts {inserted} influx rows inserted, filled {n}')
            r["vm"] = {**d, "rows_inserted": inserted, "engine_cpu_s": round(vm_cpu, 2)}
            r["export_vm_readings_per_s"] = d["readings_per_s"]
        else:
            r["vm"] = {"skipped": f"{VM_BINARY} not found (apt install victoria-metrics)"}
            r["export_vm_readings_per_s"] = None
        with DiscardSink() as sink:
            d = drain("sink", sink.url, store, n)
            got = sink.counts()["lines"]
        if got != n:
            raise RuntimeError(f"the sink received {got} lines, filled {n}")
        r["sink"] = {**d, "received": got}
        r["export_sink_readings_per_s"] = d["readings_per_s"]
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)

    for key, ingest in (("", "ingest_pyro_readings_per_s"), ("_direct", "ingest_direct_readings_per_s")):
        for dest in ("vm", "sink"):
            rate = r[f"export_{dest}_readings_per_s"]
            r[f"export_{dest}_ratio{key}"] = round(rate / r[ingest], 2) if rate else None

    plan = demo_plan()
    rate = demo_rate(plan)
    r["demo_readings_per_s"] = round(rate, 2)
    r["demo_rate_from"] = ("actors/cli/demo_configs/*.toml: sum over sensors of quantities / interval; " + "; ".join(
        f"{x['node']}: " + " + ".join(f"{len(q)}/{i:g}" for _, q, i in x["sensors"]) for x in plan))
    r["export_cpu_us_per_reading"] = r["sink"]["cpu_us_per_reading"]
    r["demo_cpu_percent_estimate"] = round(r["export_cpu_us_per_reading"] * 1e-6 * rate * 100, 4)
    with DiscardSink() as sink:
        r["trickle_without"] = trickle(plan, args.trickle, None)
        r["trickle_with"] = trickle(plan, args.trickle, sink)
    tw, to = r["trickle_with"], r["trickle_without"]
    r["demo_process_cpu_percent_without"] = to["process_cpu_percent"]
    r["demo_process_cpu_percent_with"] = tw["process_cpu_percent"]
    r["demo_exporter_thread_cpu_percent"] = tw["exporter_thread_cpu_percent"]

    print(f"hub ingest ceiling: {r['ingest_pyro_readings_per_s']:,} readings/s over Pyro5 (bench_ingest, one client, "
          f"{BATCHES_PER_CALL}x{READINGS_PER_BATCH} per call); {r['ingest_direct_readings_per_s']:,}/s Hub.push "
          "in process")
    print(f"export of {n:,} readings (filled in {r['fill_seconds']} s), batch_size 5000, checked drained = filled:")
    print(f"{'to':<18} {'readings/s':>11} {'vs Pyro5':>9} {'vs push':>8} {'CPU us/rd':>10}  check")
    if r["export_vm_readings_per_s"]:
        v = r["vm"]
        print(f"{'VictoriaMetrics':<18} {v['readings_per_s']:>11,} {r['export_vm_ratio']:>9.2f} "
              f"{r['export_vm_ratio_direct']:>8.2f} {v['cpu_us_per_reading']:>10}  vm_rows_inserted_total "
              f"{v['rows_inserted']:,}; engine CPU {v['engine_cpu_s']} s")
    else:
        print(f"{'VictoriaMetrics':<18} skipped: {r['vm']['skipped']}")
    s = r["sink"]
    print(f"{'discarding sink':<18} {s['readings_per_s']:>11,} {r['export_sink_ratio']:>9.2f} "
          f"{r['export_sink_ratio_direct']:>8.2f} {s['cpu_us_per_reading']:>10}  {s['received']:,} lines received")
    print(f"demo fleet: {rate:.2f} readings/s ({r['demo_rate_from']})")
    print(f"exporter CPU at that rate, from the bulk cost per reading: {r['demo_cpu_percent_estimate']:.4f} % of a core "
          "(lower bound: small pages cost more per reading)")
    print(f"feeding at the demo rate for {args.trickle:g} s ({tw['fed']} readings, {tw['readings_per_s']}/s), "
          f"process CPU: without exporter {to['process_cpu_percent']} %, "
          f"with an exporter thread (flush 1 s, {tw['pages']} pages) {tw['process_cpu_percent']} % of a core; "
          f"the exporter thread itself {tw['exporter_thread_cpu_percent']} %")
    return r


if __name__ == "__main__":
    main()
