"""A frozen spoke (SIGSTOP) and the dashboard: how fast commands to it fail, how fast reads stay.

Starts a hub and a spoke with a buzzer as processes on 127.0.0.1, freezes the spoke, sends
`--commands` buzzer commands at once through the dashboard's API and meanwhile reads
`/healthz` and `/api/readings`; prints each kind's latency (median and slowest) and how the
commands ended. Bounded: one burst, at most 100 commands, the spoke resumed and both stopped.

    python -m bench.bench_frozen [--commands 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def config(path: Path, name: str, role: str, ns: int, web: int) -> Path:
    lines = ["[node]", f'name = "{name}"', f'role = "{role}"', 'hal = "mock"', f'state_dir = "state-{name}"',
             "[hub]", f'host = "{HOST}"', f"nameserver_port = {ns}", "[push]", "interval = 1.0",
             "[[sensors]]", 'name = "monitor"', 'kind = "monitor"', "interval = 2.0"]
    lines += ["[web]", f'host = "{HOST}"', f"port = {web}"] if role == "hub" else ["[buzzer]", "gpio = 17"]
    path.write_text("\n".join(lines) + "\n")
    return path


def request(url: str, body: dict[str, Any] | None = None, token: str = "") -> tuple[int, float, str]:
    """(status, seconds, error text) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            res.read()
            return res.status, time.perf_counter() - t0, ""
    except urllib.error.HTTPError as exc:
        return exc.code, time.perf_counter() - t0, json.load(exc).get("error", "")


def wait(predicate: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError("the cluster did not come up")


def summary(label: str, rows: list[tuple[int, float, str]]) -> dict[str, Any]:
    ms = [r[1] * 1000 for r in rows]
    out = {"n": len(rows), "p50_ms": round(statistics.median(ms), 1), "max_ms": round(max(ms), 1),
           "statuses": {str(s): sum(1 for r in rows if r[0] == s) for s in sorted({r[0] for r in rows})}}
    print(f"{label:>14}: {out['n']:>3} requests, median {out['p50_ms']} ms, slowest {out['max_ms']} ms, "
          f"statuses {out['statuses']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the burst once and print the figures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--commands", type=int, default=20)
    args = p.parse_args(argv)
    n = max(1, min(args.commands, 100))
    with tempfile.TemporaryDirectory() as tmp:
        ns, web = free_port(), free_port()
        procs = {name: subprocess.Popen(
            [sys.executable, "-m", "actors.cli", "--log-level", "WARNING", "node", "--config",
             str(config(Path(tmp) / f"{name}.toml", name, role, ns, web))],
            cwd=tmp, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True) for name, role in (("hub", "hub"), ("pi4", "spoke"))}
        base = f"http://{HOST}:{web}"
        try:
            def pi4_online() -> bool:
                with urllib.request.urlopen(f"{base}/api/nodes", timeout=5) as res:
                    return any(x["name"] == "pi4" and x["online"] for x in json.load(res))

            wait(pi4_online, 90)
            token = json.loads((Path(tmp) / "state-hub" / "tokens.json").read_text())["operator"]
            # online can come before the spoke's names are registered (its first sweep may find
            # the hub's name server not up yet)
            wait(lambda: request(f"{base}/api/buzzer/control", {"node": "pi4", "action": "off"}, token)[0] == 200,
                 30)
            os.killpg(procs["pi4"].pid, signal.SIGSTOP)
            body = {"node": "pi4", "action": "beep", "count": 1}
            with ThreadPoolExecutor(n + 2) as pool:
                commands = [pool.submit(request, f"{base}/api/buzzer/control", body, token) for _ in range(n)]
                reads = []
                while not all(f.done() for f in commands):
                    reads.append(request(f"{base}/healthz"))
                    reads.append(request(f"{base}/api/readings"))
                done = [f.result() for f in commands]
            results = {"commands": summary("commands", done), "reads": summary("reads meanwhile", reads)}
            waited = [r for r in done if "did not answer within" in r[2]]
            print(f"{len(waited)} command(s) waited for the frozen spoke; the other {n - len(waited)} were told "
                  "at once why not", flush=True)
            results["waited"] = len(waited)
            return results
        finally:
            for proc in procs.values():
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
