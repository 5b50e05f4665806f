"""Fleet load generator: N simulated spokes x M sensors at 1 Hz against one real hub process.

Each simulated spoke behaves like the agent: one batch per second, pushed over Pyro5 on a
connection kept between runs, kept (and retried) until acknowledged; eight names kept
registered in the hub's name server (swept every 5 s on a connection of their own), and an
agent the hub's prober can ask for its health (--no-names: pushes only). It reports whether the hub
keeps up (backlog not growing), push and /api/readings latency, and hub RSS/CPU. Loopback only;
every step is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing as mp
import os
import queue
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_ROUTES = ("/api/readings", "/api/dashboard")
DASHBOARD_P99_MS = 50.0  # the dashboard issue's latency target
# A step's first seconds are not timed: the fleet's first hellos and pushes, and the first build of
# the dashboard's update, which the first pages wait for (0.1-0.3 s at 1000 nodes). The figures
# are the fleet's steady state; every request still counts for errors.
VIEWER_WARMUP_S = 3.0
QUANTITIES = [("temperature", "°C", 21.0), ("humidity", "%", 45.0), ("pressure", "hPa", 1012.0),
              ("cpu_load", "%", 10.0), ("memory_used", "MB", 200.0)]
# A spoke's actors as its agent registers them (--names in bench_names takes up to all ten)
ACTORS = ("agent", "outbox", "monitor", "network", "bme680", "dht22", "plugins", "jobs", "leds", "buzzer")
# The simulated spokes' eight: sensors only, no LED strip, buzzer or jobs, which the dashboard
# would ask each node for every second (see the README's note on the dashboard at 1000 nodes)
SPOKE_ACTORS = ("agent", "outbox", "monitor", "network", "bme680", "dht22", "sht4x", "ds18b20")
REGISTER_INTERVAL_S = 5.0  # agent.register_interval's default


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_hub(tmp: Path, mqtt_port: int | None = None) -> tuple[subprocess.Popen, int, int]:
    """A real hub node process on free loopback ports; with mqtt_port, it publishes the fleet to
    the MQTT broker on that loopback port (an [mqtt] table: Home Assistant's bridge)."""
    ns, web = free_port(), free_port()
    cfg = tmp / "hub.toml"
    mqtt = f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\n' if mqtt_port else ""
    cfg.write_text(f"""[node]\nname = "hub"\nrole = "hub"\nhal = "mock"\nstate_dir = "{tmp / 'hub'}"
[hub]\nhost = "127.0.0.1"\nnameserver_port = {ns}\n[web]\nhost = "127.0.0.1"\nport = {web}
{mqtt}[[sensors]]\nname = "monitor"\nkind = "monitor"\ninterval = 5.0\n""")
    with open(tmp / "hub.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "actors.cli", "--log-level", "WARNING", "node", "--config",
                                 str(cfg)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            c = http.client.HTTPConnection("127.0.0.1", web, timeout=1)
            try:
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    return proc, ns, web
            except OSError:
                time.sleep(0.2)
            finally:
                c.close()
    except BaseException:
        proc.kill()  # never leave a hub behind when the benchmark itself fails
        raise
    proc.kill()
    raise SystemExit("hub did not start; see " + str(tmp / "hub.log"))


class Spoke:
    """One simulated spoke: a pending queue of batches and the next seq."""

    def __init__(self, name: str, sensors: int) -> None:
        self.name, self.sensors = name, sensors
        self.seq = 0
        self.pending: list[dict[str, Any]] = []
        self.hello_done = False
        self.proxy: Any = None  # its connection to the hub, kept between pushes as the agent keeps it
        self.next_sweep = 0.0  # when its names are swept next (with --names)

    def poll(self, now: float) -> None:
        self.seq += 1
        readings = []
        for i in range(self.sensors):  # ten sensors are ten sensor names, one reading each per second
            q, unit, v = QUANTITIES[i % len(QUANTITIES)]
            readings.append({"sensor": f"s{i}", "quantity": q, "value": v + (self.seq % 10) / 10,
                             "unit": unit, "ts": now})
        self.pending.append({"node": self.name, "seq": self.seq, "readings": readings})


class Daemons:
    """One listening socket per node, as its agent's daemon: accepts, counts and closes."""

    def __init__(self, count: int) -> None:
        self.socks = [socket.create_server(("127.0.0.1", 0), backlog=64) for _ in range(count)]
        self.ports = [s.getsockname()[1] for s in self.socks]
        self.accepted = 0
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        for s in self.socks:
            s.setblocking(False)
            self._sel.register(s, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(0.1):
                try:
                    conn, _ = key.fileobj.accept()
                except BlockingIOError:
                    continue
                conn.close()
                self.accepted += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sel.close()
        for s in self.socks:
            s.close()


class SimAgent:
    """A simulated spoke's agent, as the hub asks it: fleet_health() with each actor's health and
    the outbox's counts, the shape (and about the size) a real agent answers (the prober, every
    30 s), and ping() (the dashboard, every 2 s while a page is open)."""

    def __init__(self, node: str, actors: tuple[str, ...]) -> None:
        self.node, self.actors = node, actors
        self.started = time.time()

    def fleet_health(self) -> dict[str, Any]:
        now = time.time()
        out: dict[str, Any] = {
            f"harvester.{self.node}.{actor}": {
                "name": f"harvester.{self.node}.{actor}", "kind": actor, "state": "ok",
                "uptime_s": round(now - self.started, 3), "calls": 0, "errors": 0, "busy_rejections": 0,
                "refused": 0, "slow_calls": 0, "waiting": 0, "mean_call_ms": None, "last_error": None,
                "last_error_ts": None} for actor in self.actors}
        out["outbox"] = {"pending_batches": 0, "held_in_memory": 0, "dropped_batches": 0, "disk_full": False,
                         "disk_error": None, "held_unsynced": 0, "rejected_batches": 0}
        return out

    def ping(self) -> str:
        return "pong"


class SimLeds:
    """A simulated 11-pixel strip's state(), as the dashboard reads it every second."""

    def state(self) -> dict[str, Any]:
        return {"count": 11, "brightness": 0.5, "pixels": [[0, 40, 0]] * 11}


class SimBuzzer:
    """A simulated buzzer's state(), as the dashboard reads it every second."""

    def state(self) -> dict[str, Any]:
        return {"active": False, "muted": False, "pattern": None, "last_command": None, "beeps": 0,
                "suppressed": 0, "tonal": False}


class FleetNames:
    """The simulated spokes' names in the hub's name server, as agents keep theirs: eight a spoke,
    registered before a step and swept every REGISTER_INTERVAL_S during it over a connection kept
    between sweeps. Each spoke's agent is a SimAgent on one Harvester daemon in this process
    (the hub's prober calls it); its other names point at a listening socket of the spoke's
    own, which the name server's cleaner probes as it would each board's daemon."""

    def __init__(self, ns_port: int, spokes: list[str], actuators: bool = False) -> None:
        from Pyro5.server import expose

        from nameserver.registry import Registrar
        from nameserver.security import HarvesterDaemon

        self.daemons = Daemons(len(spokes))
        self.agents = HarvesterDaemon(host="127.0.0.1", port=0)
        served = {"agent": expose(SimAgent)}
        if actuators:  # with an LED strip and a buzzer instead of two of the sensors
            served.update(leds=expose(SimLeds), buzzer=expose(SimBuzzer))
        actors = SPOKE_ACTORS[:-2] + ("leds", "buzzer") if actuators else SPOKE_ACTORS
        self.registrars = {}
        for name, port in zip(spokes, self.daemons.ports, strict=True):
            r = self.registrars[name] = Registrar([("127.0.0.1", ns_port)])
            for actor in actors:
                if actor in served:
                    obj = served[actor](name, actors) if actor == "agent" else served[actor]()
                    uri = str(self.agents.register(obj, objectId=f"{actor}.{name}"))
                else:
                    uri = f"PYRO:{actor}@127.0.0.1:{port}"
                r.add(f"harvester.{name}.{actor}", uri, {f"node:{name}", f"kind:{actor}"})
        self._serving = threading.Thread(target=self.agents.requestLoop, daemon=True)
        self._serving.start()
        with ThreadPoolExecutor(8) as pool:
            failed = sum(not ok for ok in pool.map(lambda r: r.sweep(), self.registrars.values()))
        if failed:
            self.close()
            raise RuntimeError(f"{failed} of {len(spokes)} simulated spokes could not register their names")

    def close(self) -> None:
        """Unregister every name (as agents do when they stop), stop the agents, close the sockets."""
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda r: r.unregister_all(), self.registrars.values()))
        self.agents.shutdown()
        self._serving.join(10)
        self.agents.close()
        self.daemons.close()


def spoke_names(n_spokes: int) -> list[str]:
    return [f"sim{i:04d}" for i in range(n_spokes)]


def run_step(ns: int, web: int, n_spokes: int, sensors: int, seconds: float, threads: int,
             viewers: int = 4, names: FleetNames | None = None) -> dict[str, Any]:
    """Drive n_spokes for `seconds` (sweeping their `names` when given); return backlog,
    latencies and counts."""
    from Pyro5 import errors
    from Pyro5.api import Proxy

    from nameserver.pyro import configure
    from nameserver.registry import find_aggregator

    configure()
    with Proxy(f"PYRO:Pyro.NameServer@127.0.0.1:{ns}") as nsp:
        agg_uri = find_aggregator(nsp, None)[1]  # as a spoke finds it, whatever the hub is called
    spokes = [Spoke(name, sensors) for name in spoke_names(n_spokes)]
    start = time.monotonic()
    for i, sp in enumerate(spokes):  # the sweeps spread over the interval, as agents started at random
        sp.next_sweep = start + REGISTER_INTERVAL_S * i / n_spokes
    sweeps = 0
    push_ms: list[float] = []
    errors_seen: list[str] = []
    backlog_samples: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(mine: list[Spoke]) -> None:
        nonlocal sweeps
        next_tick = time.monotonic()
        while not stop.is_set():
            now = time.time()
            for sp in mine:
                sp.poll(now)
                t0 = time.perf_counter()
                try:
                    if sp.proxy is None:
                        sp.proxy = Proxy(agg_uri)
                        sp.proxy._pyroTimeout = 10
                    if not sp.hello_done:
                        sp.proxy.hello({"node": sp.name, "role": "spoke", "profile": "native", "push_interval": 1.0})
                        sp.hello_done = True
                    answer = sp.proxy.push(sp.pending[:50], time.time())
                    acked = set(answer["acked"])
                    sp.pending = [b for b in sp.pending if b["seq"] not in acked]
                except (errors.CommunicationError, OSError) as exc:
                    sp.proxy._pyroRelease()
                    sp.proxy = None
                    with lock:
                        errors_seen.append(f"{type(exc).__name__}: {exc}")
                with lock:
                    push_ms.append(1000 * (time.perf_counter() - t0))
                if names is not None and time.monotonic() >= sp.next_sweep:
                    sp.next_sweep += REGISTER_INTERVAL_S
                    swept = names.registrars[sp.name].sweep()
                    with lock:
                        sweeps += 1
                        if not swept:
                            errors_seen.append(f"{sp.name}: a sweep of its names failed")
                if stop.is_set():
                    return
            next_tick += 1.0
            time.sleep(max(0.0, next_tick - time.monotonic()))

    groups = [spokes[i::threads] for i in range(threads)]
    pool = [threading.Thread(target=worker, args=(g,), daemon=True) for g in groups]
    # The viewers run in a process of their own: in this one, reading a 1.6 MB body (a thousand
    # nodes) chunk by chunk waits for the GIL behind the simulated fleet's threads each time, and
    # the latency measured was mostly this process's, not the hub's.
    ctx = mp.get_context("spawn")
    viewed = ctx.Queue()
    viewing = ctx.Process(target=_viewers, args=(web, viewers, seconds, viewed), daemon=True)
    viewing.start()
    for t in pool:
        t.start()
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        time.sleep(1.0)
        backlog_samples.append(sum(len(s.pending) for s in spokes))
    stop.set()
    for t in pool:
        t.join(30)
    try:
        dash_ms, viewer_errors = viewed.get(timeout=60)
    except queue.Empty:
        dash_ms, viewer_errors = {path: [] for path in DASHBOARD_ROUTES}, ["the viewers' process sent nothing"]
    viewing.join(30)
    errors_seen.extend(viewer_errors)
    for sp in spokes:
        if sp.proxy is not None:
            sp.proxy._pyroClaimOwnership()
            sp.proxy._pyroRelease()
    half = len(backlog_samples) // 2
    first, last = backlog_samples[:half] or [0], backlog_samples[half:] or [0]
    pct = statistics.quantiles(push_ms, n=100) if len(push_ms) > 2 else [0] * 99
    dash = {}
    for path, samples in dash_ms.items():
        q = statistics.quantiles(samples, n=100) if len(samples) > 2 else [0] * 99
        dash[path] = {"p50_ms": round(q[49], 2), "p90_ms": round(q[89], 2), "p99_ms": round(q[98], 2),
                      "max_ms": round(max(samples, default=0), 2), "requests": len(samples)}
    return {"spokes": n_spokes, "sensors": sensors, "readings_per_s": n_spokes * sensors,
            "pushes": len(push_ms), "push_p50_ms": round(pct[49], 2), "push_p99_ms": round(pct[98], 2),
            "http": dash, "dashboard_p99_ms": max(d["p99_ms"] for d in dash.values()),
            "backlog_first_half": round(statistics.mean(first), 1), "backlog_second_half": round(statistics.mean(last), 1),
            "sweeps": sweeps, "errors": len(errors_seen), "first_error": errors_seen[0] if errors_seen else None}


def _viewers(web: int, viewers: int, seconds: float, out: Any) -> None:
    """`viewers` open dashboard pages (GET /api/dashboard every 2 s, as app.js does), each with an
    API client (GET /api/readings every second), for `seconds`; puts (latencies, errors) on `out`."""
    dash_ms: dict[str, list[float]] = {path: [] for path in DASHBOARD_ROUTES}
    errors_seen: list[str] = []
    lock = threading.Lock()
    start = time.monotonic()
    end = start + seconds

    def viewer(offset: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", web, timeout=10)
        time.sleep(offset)
        tick = 0
        next_tick = time.monotonic()
        while time.monotonic() < end:
            for path in DASHBOARD_ROUTES[: 2 if tick % 2 == 0 else 1]:
                t0 = time.perf_counter()
                try:
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    body = resp.read()
                except OSError as exc:
                    with lock:
                        errors_seen.append(f"GET {path}: {type(exc).__name__}: {exc}")
                    conn.close()
                    continue
                with lock:
                    if time.monotonic() - start >= VIEWER_WARMUP_S:
                        dash_ms[path].append(1000 * (time.perf_counter() - t0))
                    if resp.status != 200 or not body.startswith(b"{"):
                        errors_seen.append(f"GET {path}: HTTP {resp.status} {body[:200]!r}")
            tick += 1
            next_tick += 1.0
            time.sleep(max(0.0, min(next_tick, end) - time.monotonic()))
        conn.close()

    threads = [threading.Thread(target=viewer, args=(i / viewers,), daemon=True) for i in range(viewers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    out.put((dash_ms, errors_seen))


def children(pid: int) -> list[int]:
    """The processes a process started, and theirs (the hub's store indexer is one)."""
    out = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out += [int(entry), *children(int(entry))]
        except (OSError, IndexError):  # gone meanwhile
            continue
    return out


def hub_usage(pid: int) -> tuple[float, float]:
    """RSS (MB) and total CPU seconds of a process and the processes it started."""
    rss = cpu = 0.0
    for one in [pid, *children(pid)]:
        try:
            status = Path(f"/proc/{one}/status").read_text()
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a child that ended meanwhile
            continue
        rss += int([ln for ln in status.splitlines() if ln.startswith("VmRSS")][0].split()[1]) / 1024
        cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu


def separate_cpus(hub_pid: int) -> str:
    """Give the hub its own CPU and keep the simulated fleet off it, as on a real hub board.

    Without this, on a 2-core machine the load generator's own threads (about one core at
    200 spokes) take turns with the hub's, and latency measures the contention between
    them rather than the hub."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return f"sharing the only CPU ({cpus}) with the load generator"
    hub_cpus, fleet_cpus = {cpus[-1]}, set(cpus[:-1])
    for pid in [hub_pid, *children(hub_pid)]:  # (a process the hub starts later inherits the mask)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")  # threads already running keep their own mask
        except FileNotFoundError:  # a short-lived child that ended meanwhile
            continue
        for task in tasks:
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(task), hub_cpus)
    os.sched_setaffinity(0, fleet_cpus)
    return f"hub on CPU {cpus[-1]}, load generator on CPU {','.join(map(str, sorted(fleet_cpus)))}"


def keeps_up(r: dict[str, Any], sensors: int) -> bool:
    """Backlog not growing (within one poll per spoke), no errors, every dashboard route's p99 within target."""
    return (r["backlog_second_half"] <= r["backlog_first_half"] + r["spokes"] * 0.1 + 1 and r["errors"] == 0
            and r["dashboard_p99_ms"] <= DASHBOARD_P99_MS)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run 200 spokes, then double until the hub stops keeping up (bounded by --max-spokes)."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--spokes", type=int, default=200)
    p.add_argument("--sensors", type=int, default=10)
    p.add_argument("--seconds", type=float, default=30.0, help="duration of each step")
    p.add_argument("--max-spokes", type=int, default=1600)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--viewers", type=int, default=6, help="open dashboard pages, each with an API client")
    p.add_argument("--no-names", dest="names", action="store_false",
                   help="the spokes only push: no names registered and swept (the figures before they did)")
    p.add_argument("--actuators", action="store_true",
                   help="each spoke also has an LED strip and a buzzer, which the dashboard polls")
    p.add_argument("--mqtt-port", type=int, default=None,
                   help="the hub also publishes to the MQTT broker on this loopback port (bench_mqtt starts one)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="harvester-load-"))
    hub, ns, web = start_hub(tmp, args.mqtt_port)
    results = []
    try:
        placement = separate_cpus(hub.pid)
        print(f"hub pid {hub.pid}: {placement}", flush=True)
        n = args.spokes
        while n <= args.max_spokes:
            # registered before the timing
            names = FleetNames(ns, spoke_names(n), args.actuators) if args.names else None
            try:
                rss0, cpu0 = hub_usage(hub.pid)
                r = run_step(ns, web, n, args.sensors, args.seconds, args.threads, args.viewers, names)
                rss1, cpu1 = hub_usage(hub.pid)
            finally:
                if names is not None:
                    names.close()
            r["hub_rss_mb"] = round(rss1, 1)
            r["hub_cpu_percent"] = round(100 * (cpu1 - cpu0) / args.seconds, 1)
            r["keeps_up"] = keeps_up(r, args.sensors)
            results.append(r)
            print(f"{n:>5} spokes x {args.sensors} sensors: {r['readings_per_s']:>6} readings/s, backlog "
                  f"{r['backlog_first_half']}->{r['backlog_second_half']}, push p50/p99 {r['push_p50_ms']}/"
                  f"{r['push_p99_ms']} ms, "
                  + ", ".join(f"{path} p50/p90/p99 {d['p50_ms']}/{d['p90_ms']}/{d['p99_ms']} ms" for path, d in r["http"].items())
                  + f", "
                  f"hub {r['hub_rss_mb']} MB {r['hub_cpu_percent']}% CPU, {r['sweeps']} name sweeps, "
                  f"errors {r['errors']} -> "
                  f"{'keeps up' if r['keeps_up'] else 'FALLS BEHIND'}", flush=True)
            if not r["keeps_up"]:
                break
            n *= 2
    finally:
        hub.terminate()
        hub.wait(30)
    shutil.rmtree(tmp, ignore_errors=True)  # a failed run keeps its dir: the logs are there
    sustained = [r["spokes"] for r in results if r["keeps_up"]]
    summary = {"steps": results, "largest_sustained_spokes": max(sustained) if sustained else 0}
    print(f"largest fleet sustained: {summary['largest_sustained_spokes']} spokes x {args.sensors} sensors at 1 Hz")
    (ROOT / "bench" / "results-load.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
