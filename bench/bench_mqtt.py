"""Home Assistant over MQTT: what does the hub's bridge cost, and how soon does a push show up?

The machinery is loadgen's: a real hub process (bench.loadgen.start_hub, here with an [mqtt]
table pointing at a mosquitto the bench starts on a loopback port) pinned to its own CPU
(loadgen.separate_cpus), simulated spokes pushing over Pyro5 on a fresh connection per push (the
agent now keeps its connection, so its figures are conservative: the off/on difference is the
bridge's), hub RSS and CPU from /proc (loadgen.hub_usage). The broker and a subscriber on
`#` (a child process, so the broker delivers everything, as to Home Assistant) run on the load
generator's CPU: the figures are the hub process's own.

1. Cost. The same loads run against a hub without [mqtt] (off), then against a fresh hub with
   it (on), each over a measured window after a warm-up:
   (a) the demo's rate: `--demo-spokes` spokes x `--demo-sensors` sensors pushing every
       `--demo-interval` s (default 3 x 5 every 2 s, the demo configs' push interval: 7.5
       readings/s, against the demo fleet's 7.67 readings/s from bench_export.demo_rate);
   (b) `--spokes` spokes x `--sensors` sensors at 1 Hz (default 200 x 10).
   Reported: hub CPU % of a core and RSS MB for each, and with MQTT on the messages the
   subscriber received per second (all of them, and state topics alone). With MQTT on, the
   fleet window starts once every fleet sensor's discovery config is out (the one-off burst of
   spokes x sensors configs when the spokes first appear, at most 20 s; its duration is
   reported): the window is the steady state. Discovery configs or a second bridge "online"
   inside a window (a reconnect: everything published again) are counted and shown.
2. Latency, push returned -> state topic received. Each batch's readings carry a value unique
   to the batch (the quantity's base + seq / 1000), so the state message
   `harvester/<node>/<sensor>/<quantity>` carrying it is that push's; times are
   CLOCK_MONOTONIC in both processes. Per push: its first sensor's message (p50, p99, max),
   and when all its sensors' messages had arrived (p99). At 200 spokes over the fleet window;
   at the demo's rate the demo spokes' pushes are a few a second, so a probe spoke (the
   demo's size, `--demo-sensors` readings every `--probe-interval` s) runs beside them for
   `--probe-seconds` to give a few hundred pushes at a light load (the CPU figures of (a) are
   from the window without it). A reading that the hub publishes before the push's answer
   reaches the spoke gives a negative latency: kept as measured.

Loopback only; bounded in time and count; the hubs, mosquitto, the subscriber and the temp
dirs are removed, also on error, and this process's CPU affinity is restored.

    python -m bench.bench_mqtt [--quick] [--fleet-seconds 20] [--demo-seconds 15] [--probe-seconds 15]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import QUANTITIES, free_port, hub_usage, separate_cpus, start_hub

MOSQUITTO = Path("/usr/sbin/mosquitto")
BASE = "harvester"  # MqttConfig.base_topic's default
FLEET_CONFIG = re.compile(r"homeassistant/sensor/sim\d+/s\d+_[a-z_]+/config\Z")  # a fleet spoke sensor's discovery
MAX_SECONDS = 60.0  # any one window
SETTLE_LIMIT_S = 20.0  # new spokes' discovery configs all published within this, or the window starts anyway
QUIET_S = 0.5  # after a load stops, messages still arriving within this are the load's
DRAIN_LIMIT_S = 10.0


# -- the broker and the subscriber -------------------------------------------------------------
def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of a process onto `cpus` (a new thread inherits its creator's mask)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError, PermissionError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task), cpus)


class Broker:
    """mosquitto on a free loopback port, anonymous, no persistence, in a temp dir; stopped and removed on exit."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-mqtt-broker-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def __enter__(self) -> Broker:
        try:
            conf = self.dir / "mosquitto.conf"
            # the subscriber must not lose messages to a queue limit while it catches up after a burst
            conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                            "max_queued_messages 200000\nlog_dest stderr\nlog_type error\nlog_type warning\n")
            self._log = open(self.dir / "mosquitto.log", "wb")  # noqa: SIM115 (closed in __exit__)
            self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(conf)], stdout=self._log,
                                         stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 10
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log()[-500:]}")
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return self
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port} within 10 s")
                time.sleep(0.05)
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def log(self) -> str:
        try:
            return (self.dir / "mosquitto.log").read_text(errors="replace")
        except OSError:
            return ""

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _subscribe(conn: Any, port: int) -> None:
    """Child process: subscribe to `#` and keep (monotonic time, topic, payload) of every message
    until the parent asks for them ("dump") or says "stop"."""
    import paho.mqtt.client as mqtt

    lock = threading.Lock()
    got: list[tuple[float, str, bytes]] = []
    subscribed = threading.Event()

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe("#", qos=0)

    def on_subscribe(client: Any, userdata: Any, mid: Any, reasons: Any, properties: Any) -> None:
        subscribed.set()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        t = time.monotonic()
        with lock:
            got.append((t, message.topic, bytes(message.payload)))

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-mqtt-subscriber",
                         protocol=mqtt.MQTTv311)
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    try:
        client.connect("127.0.0.1", port, keepalive=60)
        client.loop_start()
        conn.send("ready" if subscribed.wait(10) else "the subscriber's SUBSCRIBE was not acknowledged in 10 s")
        while True:
            command = conn.recv()
            if command == "dump":
                with lock:
                    out, got[:] = list(got), []
                conn.send(out)
            else:
                break
    except Exception as exc:  # noqa: BLE001 (said to the parent, which fails the bench)
        conn.send(f"subscriber failed: {type(exc).__name__}: {exc}")
    finally:
        client.disconnect()
        client.loop_stop()


class Subscriber:
    """A paho client on `#` in a child process (its CPU is not the hub's and takes no GIL from the spokes)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def __enter__(self) -> Subscriber:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_subscribe, args=(child, self.port), daemon=True)
        self.proc.start()
        try:
            answer = self._recv(20)
            if answer != "ready":
                raise RuntimeError(str(answer))
        except BaseException:
            self.__exit__()
            raise
        return self

    def _recv(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not self.conn.poll(0.1):
            if not self.proc.is_alive():
                raise RuntimeError(f"the subscriber process ended (exit code {self.proc.exitcode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the subscriber did not answer within {timeout:.0f} s")
        return self.conn.recv()

    def dump(self) -> list[tuple[float, str, bytes]]:
        """The messages received since the last dump."""
        self.conn.send("dump")
        answer = self._recv(30)
        if isinstance(answer, str):
            raise RuntimeError(answer)
        return answer

    def drain(self) -> list[tuple[float, str, bytes]]:
        """The messages received since the last dump, once none arrived for QUIET_S (at most DRAIN_LIMIT_S)."""
        out: list[tuple[float, str, bytes]] = []
        deadline = time.monotonic() + DRAIN_LIMIT_S
        while time.monotonic() < deadline:
            time.sleep(QUIET_S)
            more = self.dump()
            out += more
            if not more:
                break
        return out

    def wait_for(self, topic: str, payload: bytes, timeout: float) -> list[tuple[float, str, bytes]]:
        """Messages until one on `topic` says `payload`; RuntimeError after `timeout`."""
        out: list[tuple[float, str, bytes]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out += self.dump()
            if any(t == topic and p == payload for _, t, p in out):
                return out
            time.sleep(0.1)
        raise RuntimeError(f"no {payload.decode()!r} on {topic} within {timeout:.0f} s: the hub's bridge did not "
                           "connect")

    def __exit__(self, *exc: Any) -> None:
        with contextlib.suppress(OSError):  # a child that already ended
            self.conn.send("stop")
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


# -- the simulated spokes ----------------------------------------------------------------------
def value(sensor: int, seq: int) -> float:
    """Sensor `sensor`'s reading in batch `seq`: unique to the batch (its state message names the push)."""
    return QUANTITIES[sensor % len(QUANTITIES)][2] + seq / 1000


def state_topic(node: str, sensor: int) -> str:
    return f"{BASE}/{node}/s{sensor}/{QUANTITIES[sensor % len(QUANTITIES)][0]}"


@dataclass
class Sim:
    """One simulated spoke: its batches waiting for an ack, and the next seq."""

    name: str
    sensors: int
    interval: float
    seq: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)
    hello_done: bool = False

    def poll(self, now: float) -> None:
        self.seq += 1
        self.pending.append({"node": self.name, "seq": self.seq, "readings": [
            {"sensor": f"s{i}", "quantity": QUANTITIES[i % len(QUANTITIES)][0], "value": value(i, self.seq),
             "unit": QUANTITIES[i % len(QUANTITIES)][1], "ts": now} for i in range(self.sensors)]})


@dataclass
class Window:
    """What one measured window saw."""

    t0: float
    t1: float
    cpu_percent: float
    rss_mb: float
    pushes: list[tuple[str, tuple[int, ...], float, float]]  # (node, seqs acked, sent, returned), all of the run
    errors: list[str]
    backlog: int


def drive(agg_uri: str, groups: list[tuple[list[Sim], float]], hub_pid: int, warm: float, seconds: float,
          settle: Callable[[], None] | None = None) -> Window:
    """Run each group of spokes on its own thread (each group's spokes one after another every
    interval, the groups staggered over it); measure the hub for `seconds` after `warm` (and
    after `settle()` returns, when given)."""
    from Pyro5 import errors
    from Pyro5.api import Proxy

    pushes: list[tuple[str, tuple[int, ...], float, float]] = []
    errors_seen: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    start = time.monotonic()

    def worker(mine: list[Sim], interval: float, offset: float) -> None:
        next_tick = start + offset
        while not stop.wait(max(0.0, next_tick - time.monotonic())):
            for sp in mine:
                sp.poll(time.time())
                t0 = time.monotonic()
                try:
                    with Proxy(agg_uri) as agg:
                        agg._pyroTimeout = 10
                        if not sp.hello_done:
                            agg.hello({"node": sp.name, "role": "spoke", "profile": "native",
                                       "push_interval": sp.interval})
                            sp.hello_done = True
                        answer = agg.push(sp.pending[:50], time.time())
                    t1 = time.monotonic()
                    acked = tuple(answer["acked"])
                    sp.pending = [b for b in sp.pending if b["seq"] not in acked]
                    with lock:
                        pushes.append((sp.name, acked, t0, t1))
                except (errors.CommunicationError, OSError) as exc:
                    with lock:
                        errors_seen.append(f"{type(exc).__name__}: {exc}")
                if stop.is_set():
                    return
            next_tick += interval

    by_interval: dict[float, int] = {}
    for _, interval in groups:
        by_interval[interval] = by_interval.get(interval, 0) + 1
    threads, seen = [], dict.fromkeys(by_interval, 0)
    for mine, interval in groups:
        offset = interval * seen[interval] / by_interval[interval]
        seen[interval] += 1
        threads.append(threading.Thread(target=worker, args=(mine, interval, offset), daemon=True))
    for t in threads:
        t.start()
    try:
        time.sleep(warm)
        if settle is not None:
            settle()
        t0, (_, cpu0) = time.monotonic(), hub_usage(hub_pid)
        time.sleep(seconds)
        rss1, cpu1 = hub_usage(hub_pid)
        t1 = time.monotonic()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    backlog = sum(len(sp.pending) for mine, _ in groups for sp in mine)
    return Window(t0, t1, round(100 * (cpu1 - cpu0) / (t1 - t0), 2), round(rss1, 1), pushes, errors_seen, backlog)


def spread(sims: list[Sim], threads: int) -> list[tuple[list[Sim], float]]:
    n = max(1, min(threads, len(sims)))
    return [(sims[i::n], sims[0].interval) for i in range(n)]


def pct(samples: list[float], q: int) -> float | None:
    if not samples:
        return None
    if len(samples) < 3:
        return round(max(samples), 2)
    return round(statistics.quantiles(samples, n=100, method="inclusive")[q - 1], 2)


# -- the figures -------------------------------------------------------------------------------
def summarize(w: Window, sims: list[Sim], messages: list[tuple[float, str, bytes]] | None) -> dict[str, Any]:
    """A window's figures; with the subscriber's messages, also rates and push -> state latency."""
    inside = [p for p in w.pushes if w.t0 <= p[3] <= w.t1]
    push_ms = [1000 * (p[3] - p[2]) for p in inside]
    seconds = w.t1 - w.t0
    out: dict[str, Any] = {
        "spokes": len(sims), "sensors": sims[0].sensors, "interval_s": sims[0].interval,
        "readings_per_s": round(sum(s.sensors / s.interval for s in sims), 2), "seconds": round(seconds, 1),
        "hub_cpu_percent": w.cpu_percent, "hub_rss_mb": w.rss_mb, "pushes": len(inside),
        "push_p50_ms": pct(push_ms, 50), "push_p99_ms": pct(push_ms, 99), "errors": len(w.errors),
        "first_error": w.errors[0] if w.errors else None, "backlog_at_end": w.backlog}
    if messages is None:
        return out
    in_window = [m for m in messages if w.t0 <= m[0] <= w.t1]
    states = [m for m in in_window if m[1].count("/") == 3 and not m[1].startswith(f"{BASE}/bridge/")
              and not m[1].endswith(("/alerts/count", "/availability")) and m[1].startswith(f"{BASE}/")]
    out["messages_per_s"] = round(len(in_window) / seconds, 1)
    # discovery configs again, or a second "online": the bridge reconnected (everything is published again)
    out["discovery_messages"] = sum(1 for m in in_window if m[1].endswith("/config"))
    out["bridge_online"] = sum(1 for m in in_window if m[1] == f"{BASE}/bridge/status" and m[2] == b"online")
    out["state_messages_per_s"] = round(len(states) / seconds, 1)
    out["latency"] = latency(w, sims, messages)
    return out


def latency(w: Window, sims: list[Sim], messages: list[tuple[float, str, bytes]]) -> dict[str, Any]:
    """Per push acked in the window: first sensor's state message, and all of them, received minus push returned."""
    first_seen: dict[tuple[str, bytes], float] = {}
    for t, topic, payload in messages:
        first_seen.setdefault((topic, payload), t)
    sensors = {s.name: s.sensors for s in sims}
    first_ms: list[float] = []
    all_ms: list[float] = []
    pushes = unmatched = 0
    for node, seqs, _, returned in w.pushes:
        if node not in sensors or not w.t0 <= returned <= w.t1:
            continue
        for seq in seqs:
            pushes += 1
            got = [first_seen.get((state_topic(node, i), repr(value(i, seq)).encode())) for i in range(sensors[node])]
            if got[0] is None:
                unmatched += 1
                continue
            first_ms.append(1000 * (got[0] - returned))
            if None not in got:
                all_ms.append(1000 * (max(g for g in got if g is not None) - returned))
    return {"pushes": pushes, "matched": len(first_ms), "unmatched": unmatched,
            "p50_ms": pct(first_ms, 50), "p99_ms": pct(first_ms, 99), "max_ms": round(max(first_ms), 2) if first_ms
            else None, "min_ms": round(min(first_ms), 2) if first_ms else None,
            "all_sensors_p50_ms": pct(all_ms, 50), "all_sensors_p99_ms": pct(all_ms, 99)}


def run_hub(tmp: Path, args: argparse.Namespace, cpus: set[int], broker: Broker | None,
            sub: Subscriber | None) -> dict[str, Any]:
    """One hub (with [mqtt] when a broker is given) through the demo-rate window, the probe window
    (with MQTT only) and the fleet window."""
    from Pyro5.api import Proxy

    from nameserver.pyro import configure
    from nameserver.registry import find_aggregator

    os.sched_setaffinity(0, cpus)  # separate_cpus splits what this process may use: all of it again
    tmp.mkdir()
    try:
        hub, ns, _ = start_hub(tmp, broker.port if broker else None)
    except SystemExit as exc:  # loadgen's way of saying the hub did not start; not ours to exit with
        raise RuntimeError(str(exc)) from None
    out: dict[str, Any] = {}
    try:
        out["placement"] = separate_cpus(hub.pid)
        fleet_cpus = os.sched_getaffinity(0)
        if broker is not None and sub is not None:
            assert broker.proc is not None
            pin(broker.proc.pid, fleet_cpus)
            pin(sub.proc.pid, fleet_cpus)
            sub.wait_for(f"{BASE}/bridge/status", b"online", 20)
        configure()
        with Proxy(f"PYRO:Pyro.NameServer@127.0.0.1:{ns}") as nsp:
            agg_uri = find_aggregator(nsp, None)[1]

        demo = [Sim(f"demo{i}", args.demo_sensors, args.demo_interval) for i in range(args.demo_spokes)]
        w = drive(agg_uri, spread(demo, len(demo)), hub.pid, args.warmup, args.demo_seconds)
        out["demo"] = summarize(w, demo, sub.drain() if sub else None)

        if sub is not None:
            probe = Sim("probe", args.demo_sensors, args.probe_interval)
            w = drive(agg_uri, [*spread(demo, len(demo)), ([probe], probe.interval)], hub.pid, args.warmup,
                      args.probe_seconds)
            out["probe"] = summarize(w, [*demo, probe], sub.drain())

        fleet = [Sim(f"sim{i:04d}", args.sensors, 1.0) for i in range(args.spokes)]
        if sub is None:
            w = drive(agg_uri, spread(fleet, args.threads), hub.pid, args.warmup, args.fleet_seconds)
            out["fleet"] = summarize(w, fleet, None)
        else:
            before: list[tuple[float, str, bytes]] = []
            burst: dict[str, Any] = {}

            def announced() -> None:
                """Until every new spoke sensor's discovery config is out (a one-off burst of
                spokes x sensors configs the first time the fleet is seen), then a second for the
                publisher's queue: the window measures the steady state, the burst is reported."""
                want, seen, t_first = args.spokes * args.sensors, set(), None
                deadline = time.monotonic() + SETTLE_LIMIT_S
                while time.monotonic() < deadline and len(seen) < want:
                    time.sleep(0.2)
                    got = sub.dump()
                    before.extend(got)
                    for t, topic, _ in got:
                        if FLEET_CONFIG.match(topic):
                            t_first = t if t_first is None else t_first
                            seen.add(topic)
                            burst["last"] = t
                burst.update(configs=len(seen), wanted=want, settled=len(seen) >= want, first=t_first)
                time.sleep(1.0)

            w = drive(agg_uri, spread(fleet, args.threads), hub.pid, args.warmup, args.fleet_seconds, announced)
            out["fleet"] = summarize(w, fleet, before + sub.drain())
            first, last = burst.get("first"), burst.get("last")
            out["fleet"]["discovery"] = {
                "configs": burst.get("configs"), "wanted": burst.get("wanted"), "all_before_window": burst.get("settled"),
                "burst_s": round(last - first, 2) if first is not None and last is not None else None}
    finally:
        hub.terminate()
        try:
            hub.wait(30)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait(10)
        os.sched_setaffinity(0, cpus)
        with contextlib.suppress(OSError):  # the hub's warnings (a broker disconnect shows here)
            out["hub_log_tail"] = (tmp / "hub.log").read_text(errors="replace")[-1000:] or None
    return out


# -- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, print a summary, return the figures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spokes", type=int, default=200)
    p.add_argument("--sensors", type=int, default=10)
    p.add_argument("--threads", type=int, default=8, help="load generator threads for the fleet")
    p.add_argument("--fleet-seconds", type=float, default=20.0, help="measured window at --spokes, per hub")
    p.add_argument("--demo-spokes", type=int, default=3)
    p.add_argument("--demo-sensors", type=int, default=5)
    p.add_argument("--demo-interval", type=float, default=2.0, help="the demo spokes' push interval (s)")
    p.add_argument("--demo-seconds", type=float, default=15.0, help="measured window at the demo's rate, per hub")
    p.add_argument("--probe-interval", type=float, default=0.05, help="the latency probe spoke's push interval (s)")
    p.add_argument("--probe-seconds", type=float, default=15.0, help="latency window at the demo's rate")
    p.add_argument("--warmup", type=float, default=2.0, help="load before each measured window (s)")
    p.add_argument("--quick", action="store_true", help="8 s demo, 8 s probe and 10 s fleet windows")
    args = p.parse_args(argv)
    if args.quick:
        args.demo_seconds, args.probe_seconds, args.fleet_seconds = (
            min(args.demo_seconds, 8.0), min(args.probe_seconds, 8.0), min(args.fleet_seconds, 10.0))
    for name in ("fleet_seconds", "demo_seconds", "probe_seconds", "warmup"):
        setattr(args, name, max(1.0, min(getattr(args, name), MAX_SECONDS)))
    args.spokes = max(1, min(args.spokes, 2000))
    args.demo_spokes = max(1, min(args.demo_spokes, 50))
    args.probe_interval = max(0.01, args.probe_interval)
    if not MOSQUITTO.exists():
        raise RuntimeError(f"{MOSQUITTO} not found (apt install mosquitto)")

    cpus = os.sched_getaffinity(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    t_start = time.monotonic()
    try:
        off = run_hub(tmp / "off", args, cpus, None, None)
        with Broker() as broker, Subscriber(broker.port) as sub:
            on = run_hub(tmp / "on", args, cpus, broker, sub)
            broker_log = broker.log()
    finally:
        os.sched_setaffinity(0, cpus)
        shutil.rmtree(tmp, ignore_errors=True)

    if not on["fleet"].get("state_messages_per_s") or not on["fleet"]["latency"]["matched"] \
            or not on["probe"]["latency"]["matched"]:
        raise RuntimeError(f"the subscriber saw no state messages for the pushes: fleet {on['fleet']}, "
                           f"probe {on['probe']}; broker log: {broker_log[-500:]}")
    from bench.bench_export import demo_plan, demo_rate

    fo, fn, do, dn = off["fleet"], on["fleet"], off["demo"], on["demo"]
    lat_demo, lat_fleet = on["probe"]["latency"], fn["latency"]
    r: dict[str, Any] = {
        "off": off, "on": on, "placement": on["placement"],
        "demo_fleet_readings_per_s": round(demo_rate(demo_plan()), 2),
        "demo_readings_per_s": dn["readings_per_s"],
        "demo_cpu_percent_off": do["hub_cpu_percent"], "demo_cpu_percent_on": dn["hub_cpu_percent"],
        "demo_rss_mb_off": do["hub_rss_mb"], "demo_rss_mb_on": dn["hub_rss_mb"],
        "demo_messages_per_s": dn["messages_per_s"],
        "fleet_spokes": args.spokes, "fleet_sensors": args.sensors, "fleet_readings_per_s": fn["readings_per_s"],
        "fleet_cpu_percent_off": fo["hub_cpu_percent"], "fleet_cpu_percent_on": fn["hub_cpu_percent"],
        "fleet_rss_mb_off": fo["hub_rss_mb"], "fleet_rss_mb_on": fn["hub_rss_mb"],
        "fleet_messages_per_s": fn["messages_per_s"], "fleet_state_messages_per_s": fn["state_messages_per_s"],
        "demo_latency_p50_ms": lat_demo["p50_ms"], "demo_latency_p99_ms": lat_demo["p99_ms"],
        "demo_latency_pushes": lat_demo["matched"],
        "fleet_latency_p50_ms": lat_fleet["p50_ms"], "fleet_latency_p99_ms": lat_fleet["p99_ms"],
        "fleet_latency_pushes": lat_fleet["matched"],
        "fleet_discovery_burst_s": fn["discovery"]["burst_s"],
        "broker_log_tail": broker_log[-300:] or None,
        "seconds": round(time.monotonic() - t_start, 1),
    }

    print(f"MQTT bridge on a real hub process ({r['placement']}; mosquitto and a subscriber on # beside the "
          "load generator)")
    print(f"{'load':<44} {'MQTT':<5} {'hub CPU %':>9} {'RSS MB':>7} {'msgs/s':>7} {'push p99 ms':>11} {'errors':>6}")
    for label, key in ((f"demo rate: {args.demo_spokes} spokes x {args.demo_sensors} sensors / "
                        f"{args.demo_interval:g} s", "demo"),
                       (f"{args.spokes} spokes x {args.sensors} sensors at 1 Hz", "fleet")):
        for state, run in (("off", off), ("on", on)):
            x = run[key]
            print(f"{label if state == 'off' else '':<44} {state:<5} {x['hub_cpu_percent']:>9} {x['hub_rss_mb']:>7} "
                  f"{x.get('messages_per_s', '-'):>7} {x['push_p99_ms']:>11} {x['errors']:>6}")
    print(f"(demo fleet, from its configs: {r['demo_fleet_readings_per_s']} readings/s; simulated here: "
          f"{r['demo_readings_per_s']} + the hub's own monitor)")
    print("push returned -> its state topic received, first sensor p50 / p99 / max (ms); all sensors p99; "
          "pushes matched:")
    probe = on["probe"]
    for label, lat in ((f"demo rate + a probe spoke ({args.demo_sensors} sensors every {args.probe_interval:g} s), "
                        f"hub CPU {probe['hub_cpu_percent']} %", lat_demo),
                       (f"{args.spokes} spokes x {args.sensors} sensors at 1 Hz", lat_fleet)):
        print(f"  {label}: {lat['p50_ms']} / {lat['p99_ms']} / {lat['max_ms']}; {lat['all_sensors_p99_ms']}; "
              f"{lat['matched']}/{lat['pushes']}")
    d = fn["discovery"]
    print(f"announcing the {args.spokes} new spokes: {d['configs']}/{d['wanted']} sensor discovery configs in "
          f"{d['burst_s']} s, before the fleet window: {'yes' if d['all_before_window'] else 'NO'}")
    for key in ("demo", "probe", "fleet"):
        x = on[key]
        if x["discovery_messages"] or x["bridge_online"] > 0:
            print(f"note: the {key} window holds {x['discovery_messages']} discovery configs and "
                  f"{x['bridge_online']} bridge 'online' (a reconnect publishes everything again)")
    print(f"({r['seconds']} s)")
    return r


if __name__ == "__main__":
    main()
