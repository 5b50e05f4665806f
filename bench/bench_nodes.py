"""RSS and CPU of each node profile: run the three-node demo for a while and sample /proc.

Prints RSS at the end, the RSS slope over the run (MB per hour; a leak shows as a steady
positive slope) and CPU as a share of one core. Loopback only; bounded by --seconds.

The demo runs under this interpreter, its native node (pizero) under --native-python
(default: this one too). `make soak` passes a virtual environment made as a Pi Zero's
release install is (the package and its requirements, no extra): the development venv's
test extra installs greenlet (through playwright), which Pyro5's client then imports, and
no board has. The WASM nodes stay on this interpreter: their plugin sandbox is the one
built here (a board's comes precompiled with its release). Both interpreters, and whether
they have greenlet, are printed and kept in the output."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.loadgen import free_port, hub_usage

ROOT = Path(__file__).resolve().parents[1]
BUDGETS_MB = {"hub": 150.0, "pi4": 120.0, "pizero": 30.0}


def agent_pids(ns_port: int) -> dict[str, int]:
    """node -> pid, from each agent actor."""
    from actors.client import connect

    fleet = connect("127.0.0.1", ns_port)
    return {n: fleet[n]["agent"].info()["pid"] for n in ("hub", "pi4", "pizero")}


PARTS = ("mapped files", "malloc heap", "malloc thread arenas", "other anonymous")
ARENA_ALIGN = 64 << 20  # glibc's per-thread arenas (HEAP_MAX_SIZE on 64-bit) start at this alignment


def rss_parts(pid: int) -> dict[str, float]:
    """RSS (MB) by where it lives, from /proc/PID/smaps: which part grows tells a leak's kind.

    Mapped files are libraries and compiled WASM modules. The malloc heap and the per-thread
    arenas hold C allocations (SQLite, wasmtime, large Python objects) and their
    fragmentation. Other anonymous memory is CPython's object arenas, WASM linear memory,
    thread stacks and large mmap'd blocks (adjacent maps merge, so these cannot be told
    apart). A map's kind is read from its name and address: a breakdown, not an audit."""
    return split_smaps(Path(f"/proc/{pid}/smaps").read_text())


def split_smaps(text: str) -> dict[str, float]:
    """The parts of rss_parts() from the text of an smaps file."""
    parts = dict.fromkeys(PARTS, 0.0)
    kind = None
    for line in text.splitlines():
        head = line.split(None, 5)
        if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            lo = int(head[0].split("-")[0], 16)
            name = head[5].strip() if len(head) > 5 else ""
            if name == "[heap]":
                kind = "malloc heap"
            elif name.startswith("/"):
                kind = "mapped files"
            elif name:
                kind = None  # [stack], [vdso] and the like: a few pages
            elif lo % ARENA_ALIGN == 0:
                kind = "malloc thread arenas"
            else:
                kind = "other anonymous"
        elif line.startswith("Rss:") and kind is not None:
            parts[kind] += int(line.split()[1]) / 1024
    return {k: round(v, 1) for k, v in parts.items()}


def slope_mb_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per hour."""
    n = len(samples)
    if n < 3:
        return 0.0
    mx = sum(t for t, _ in samples) / n
    my = sum(m for _, m in samples) / n
    den = sum((t - mx) ** 2 for t, _ in samples)
    return 3600 * sum((t - mx) * (m - my) for t, m in samples) / den if den else 0.0


def describe_python(python: str) -> dict[str, Any]:
    """An interpreter's environment, and whether Pyro5's client will find greenlet in it (1.1 MB per node)."""
    out = subprocess.run([python, "-c", "import importlib.util, sys; "
                          "print(sys.prefix); print(importlib.util.find_spec('greenlet') is not None)"],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    prefix, greenlet = out.stdout.split()
    return {"prefix": prefix, "greenlet": greenlet == "True"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the demo for --seconds after a --warmup, sampling every node."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--warmup", type=float, default=30.0)
    p.add_argument("--interval", type=float, default=5.0, help="sampling period")
    p.add_argument("--output", type=Path, default=ROOT / "bench" / "results-nodes.json")
    p.add_argument("--native-python", default=sys.executable,
                   help="the interpreter of the native node (make soak: a Pi Zero's release install, see above)")
    args = p.parse_args(argv)
    environment = {"python": describe_python(sys.executable), "native_python": describe_python(args.native_python)}
    web, ns = free_port(), free_port()
    state = Path(tempfile.mkdtemp(prefix="harvester-nodes-"))
    demo = subprocess.Popen([sys.executable, "-m", "actors.cli", "demo", "--native-python", args.native_python,
                             "--port", str(web), "--ns-port", str(ns),
                             "--state-dir", str(state)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                pids = agent_pids(ns)
                break
            except Exception:  # nodes still starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        time.sleep(args.warmup)
        start = {n: hub_usage(pid) for n, pid in pids.items()}
        parts_start = {n: rss_parts(pid) for n, pid in pids.items()}
        t0 = time.monotonic()
        samples: dict[str, list[tuple[float, float]]] = {n: [] for n in pids}
        while time.monotonic() - t0 < args.seconds:
            for n, pid in pids.items():
                samples[n].append((time.monotonic() - t0, hub_usage(pid)[0]))
            time.sleep(args.interval)
        elapsed = time.monotonic() - t0
        end = {n: hub_usage(pid) for n, pid in pids.items()}
        parts_end = {n: rss_parts(pid) for n, pid in pids.items()}
        threads = {n: len(os.listdir(f"/proc/{pid}/task")) for n, pid in pids.items()}
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(60)
    shutil.rmtree(state, ignore_errors=True)  # a failed run keeps its dir: the logs are there
    result = {}
    print(f"node profiles after {args.warmup:.0f}s warm-up + {elapsed:.0f}s (demo, mock hardware, x86-64)")
    for role, env in (("hub, pi4", environment["python"]), ("pizero", environment["native_python"])):
        print(f"{role}: {env['prefix']} (greenlet {'installed' if env['greenlet'] else 'absent'})")
    print(f"{'node':<8} {'RSS MB':>8} {'budget':>8} {'slope MB/h':>11} {'CPU %':>7} {'threads':>8}")
    for n in pids:
        cpu = 100 * (end[n][1] - start[n][1]) / elapsed
        result[n] = {"rss_mb": round(end[n][0], 1), "budget_mb": BUDGETS_MB[n],
                     "rss_slope_mb_per_h": round(slope_mb_per_hour(samples[n]), 2),
                     "cpu_percent": round(cpu, 2), "threads": threads[n],
                     "rss_parts_start_mb": parts_start[n], "rss_parts_end_mb": parts_end[n]}
        r = result[n]
        print(f"{n:<8} {r['rss_mb']:>8} {r['budget_mb']:>8} {r['rss_slope_mb_per_h']:>11} {r['cpu_percent']:>7} "
              f"{r['threads']:>8}")
    print(f"\nwhere the RSS is, MB at the start of the run -> at its end ({elapsed / 60:.0f} min)")
    print(f"{'part':<22}" + "".join(f"{n:>18}" for n in pids))
    for part in PARTS:
        print(f"{part:<22}" + "".join(f"{parts_start[n][part]:>8.1f} -> {parts_end[n][part]:<6.1f}" for n in pids))
    args.output.write_text(json.dumps({**result, "environment": environment}, indent=2))
    return result


if __name__ == "__main__":
    main()
