"""`make bench`: every benchmark in bench/, one table, and bench/results.json.

Each benchmark is bounded in time and talks to loopback only. Figures are from this
machine and are relative: compare them with each other and with their baselines."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_all(quick: bool) -> dict[str, Any]:
    """Run each benchmark with bounded settings; a failing one is recorded, not fatal."""
    from bench import (
        bench_dashboard,
        bench_export,
        bench_frozen,
        bench_hubs,
        bench_idle,
        bench_ingest,
        bench_latency,
        bench_mqtt,
        bench_names,
        bench_nodes,
        bench_notify,
        bench_plugins,
        loadgen,
    )

    plan = [
        ("ingest", bench_ingest.main, ["--seconds", "3" if quick else "5"]),
        ("export", bench_export.main, ["--seconds", "2" if quick else "3", "--readings", "100000" if quick else "200000",
                                       "--trickle", "5" if quick else "10"]),
        ("plugins", bench_plugins.main, ["--iterations", "1000" if quick else "3000"]),
        ("dashboard", bench_dashboard.main, ["--seconds", "5" if quick else "10"]),
        ("latency", bench_latency.main, ["--calls", "300" if quick else "1000"]),
        ("names", bench_names.main, ["--seconds", "5" if quick else "10"]),
        ("idle", bench_idle.main, ["--held", "0,130,500", "--lookups", "30"]),
        ("frozen", bench_frozen.main, ["--commands", "20"]),
        ("hubs", bench_hubs.main, ["--kills", "3" if quick else "10", "--seconds", "5", "--rest", "10" if quick else "30"]),
        ("mqtt", bench_mqtt.main, ["--quick"] if quick else []),
        ("notify", bench_notify.main, ["--quick"] if quick else ["--alerts", "50"]),
        ("nodes", bench_nodes.main, ["--seconds", "60" if quick else "600", "--warmup", "20" if quick else "60"]),
        # 250, 500, 1000 (the fleet-size target), 2000 spokes, until the hub falls behind
        ("load", loadgen.main, ["--seconds", "10" if quick else "30", "--spokes", "250",
                                "--max-spokes", "1000" if quick else "2000"]),
    ]
    results: dict[str, Any] = {"machine": platform.platform(), "python": platform.python_version(),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for name, fn, args in plan:
        print(f"\n=== {name} ===", flush=True)
        t0 = time.monotonic()
        try:
            results[name] = fn(args)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{name} failed: {exc}")
        print(f"({name}: {time.monotonic() - t0:.0f} s)", flush=True)
    return results


# The same figures before the scale round (commit 78d488f, this 2-core x86-64 machine), printed
# beside today's: (start of the row's label, figure then).
BEFORE = [
    ("ingest, Pyro5 batched", "52,000-133,000 ; 0.21-0.27"),
    ("pizero: RSS", "36.6 (30) after 30 min, +1.8, 0.30"),
    ("fleet of 400 spokes", "48-87, 19-22, 53-54"),
    ("fleet of 800 spokes", "98, -, 94 (falls behind)"),
    ("fleet of 1000 spokes", "70, 126, 94 (falls behind)"),
    ("largest fleet sustained", "400"),
]


def before(what: str) -> str:
    """The figure of a row before the scale round, or '' for rows it did not change."""
    return next((then for start, then in BEFORE if what.startswith(start)), "")


def table(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The headline figures as (what, value) rows."""
    def g(*keys: str) -> Any:
        cur: Any = r
        for k in keys:
            if not isinstance(cur, dict) or k not in cur:
                return None
            cur = cur[k]
        return cur

    rows = [
        ("ingest, Pyro5 batched (readings/s; ratio to bare Pyro5)",
         f"{g('ingest', 'ingest_pyro_readings_per_s')} ; {g('ingest', 'ingest_pyro_ratio')}"),
        ("ingest, HTTP /push (readings/s; ratio to bare Bottle)",
         f"{g('ingest', 'ingest_http_readings_per_s')} ; {g('ingest', 'ingest_http_ratio')}"),
        ("export, batch 5000: to VictoriaMetrics / discarding sink (readings/s); ratio to ingest over Pyro5",
         f"{g('export', 'export_vm_readings_per_s')} / {g('export', 'export_sink_readings_per_s')} ; "
         f"{g('export', 'export_vm_ratio')} / {g('export', 'export_sink_ratio')}"),
        (f"export at the demo's {g('export', 'demo_readings_per_s')} readings/s, % of a core: from us/reading; "
         "exporter thread; process without / with it",
         f"{g('export', 'demo_cpu_percent_estimate')}; {g('export', 'demo_exporter_thread_cpu_percent')}; "
         f"{g('export', 'demo_process_cpu_percent_without')} / {g('export', 'demo_process_cpu_percent_with')}"),
        ("plugin evaluate p50/p99, WASM (us)",
         f"{g('plugins', 'wasm', 'evaluate_p50_us')} / {g('plugins', 'wasm', 'evaluate_p99_us')}"),
        ("plugin evaluate p50/p99, native (us)",
         f"{g('plugins', 'native', 'evaluate_p50_us')} / {g('plugins', 'native', 'evaluate_p99_us')}"),
        ("plugin reload p50, WASM (ms)", f"{g('plugins', 'wasm', 'reload_p50_ms')}"),
        ("RSS per extra WASM plugin (MB)", f"{g('plugins', 'wasm', 'rss_per_additional_mb')}"),
        ("C heap growth per 10,000 evaluates, WASM / native (KB)",
         f"{g('plugins', 'wasm', 'heap_growth_kb_per_10k_calls')} / "
         f"{g('plugins', 'native', 'heap_growth_kb_per_10k_calls')}"),
        ("sensor latest() p50/p99 (ms)",
         f"{g('latency', 'sensor_latest', 'p50_ms')} / {g('latency', 'sensor_latest', 'p99_ms')}"),
        ("sensor read() p50/p99 (ms)",
         f"{g('latency', 'sensor_read', 'p50_ms')} / {g('latency', 'sensor_read', 'p99_ms')}"),
    ]
    dash = r.get("dashboard") or {}
    if isinstance(dash, dict):
        p50 = next((v for k, v in dash.items() if "p50" in k), None)
        p99 = next((v for k, v in dash.items() if "p99" in k), None)
        rows.append(("/api/readings under push load p50/p99 (ms)", f"{p50} / {p99}"))
    for node in ("hub", "pi4", "pizero"):
        n = g("nodes", node) or {}
        rows.append((f"{node}: RSS MB (budget), slope MB/h, CPU %",
                     f"{n.get('rss_mb')} ({n.get('budget_mb')}), {n.get('rss_slope_mb_per_h')}, {n.get('cpu_percent')}"))
    for step in g("load", "steps") or []:
        http = step.get("http", {})
        rows.append((f"fleet of {step['spokes']} spokes x {step['sensors']} sensors: /api/readings, /api/dashboard "
                     "p99 (ms), hub CPU %",
                     f"{http.get('/api/readings', {}).get('p99_ms')}, {http.get('/api/dashboard', {}).get('p99_ms')}, "
                     f"{step.get('hub_cpu_percent')}{'' if step.get('keeps_up') else ' (falls behind)'}"))
    rows.append(("largest fleet sustained (spokes x 10 sensors at 1 Hz)", f"{g('load', 'largest_sustained_spokes')}"))
    for mode in ("now", "before"):
        if g("names", f"sweeps_{mode}"):
            rows.append((f"name server, {g('names', 'nodes')} nodes sweeping every {g('names', 'interval_s')} s, "
                         f"{mode}: % of a core, µs a sweep",
                         f"{g('names', f'sweeps_{mode}', 'server_cpu_percent')}, "
                         f"{g('names', f'sweeps_{mode}', 'server_us_per_sweep')}"))
            rows.append((f"name server cleaner, {g('names', 'nodes')} nodes, {mode}: % of a core, connections/s",
                         f"{g('names', f'cleaner_{mode}', 'server_cpu_percent')}, "
                         f"{g('names', f'cleaner_{mode}', 'connections_per_s')}"))
    for row in g("idle", "rows") or []:
        rows.append((f"name-server lookups ok with {row['held']} silent connections held, {row['server']}",
                     f"{row['ok']}/{row['lookups']} (held {row['opened']}), max {row['max_ms']} ms"))
    if g("frozen", "commands"):
        rows.append(("20 commands to a frozen spoke: median / slowest (ms), waited",
                     f"{g('frozen', 'commands', 'p50_ms')} / {g('frozen', 'commands', 'max_ms')}, {g('frozen', 'waited')}"))
        rows.append(("reads meanwhile: median / slowest (ms)",
                     f"{g('frozen', 'reads', 'p50_ms')} / {g('frozen', 'reads', 'max_ms')}"))
    if g("hubs", "failover"):
        rows.append((f"three hubs: leader fail-over after SIGKILL, median / worst of {g('hubs', 'failover', 'kills')} (s)",
                     f"{g('hubs', 'failover', 'median_s')} / {g('hubs', 'failover', 'worst_s')}"))
        rows.append(("three hubs: ingest (readings/s, majority committed); ratio to one hub",
                     f"{g('hubs', 'ingest', 'three_hubs_readings_per_s')} ; {g('hubs', 'ingest', 'ratio')}"))
        rows.append(("a hub of three at rest: RSS MB, CPU %; paid over a lone hub",
                     f"{g('hubs', 'rest', 'one_of_three', 'rss_mb')}, {g('hubs', 'rest', 'one_of_three', 'cpu_percent')}; "
                     f"+{g('hubs', 'rest', 'rss_paid_mb')} MB, +{g('hubs', 'rest', 'cpu_paid_percent')} %"))
    if g("mqtt", "fleet_cpu_percent_on") is not None:
        rows.append((f"MQTT bridge off / on, demo rate ({g('mqtt', 'demo_readings_per_s')} readings/s): hub CPU %; "
                     "RSS MB",
                     f"{g('mqtt', 'demo_cpu_percent_off')} / {g('mqtt', 'demo_cpu_percent_on')}; "
                     f"{g('mqtt', 'demo_rss_mb_off')} / {g('mqtt', 'demo_rss_mb_on')}"))
        rows.append((f"MQTT bridge off / on, {g('mqtt', 'fleet_spokes')} spokes x {g('mqtt', 'fleet_sensors')} sensors "
                     "at 1 Hz: hub CPU %; RSS MB; messages/s",
                     f"{g('mqtt', 'fleet_cpu_percent_off')} / {g('mqtt', 'fleet_cpu_percent_on')}; "
                     f"{g('mqtt', 'fleet_rss_mb_off')} / {g('mqtt', 'fleet_rss_mb_on')}; "
                     f"{g('mqtt', 'fleet_messages_per_s')}"))
        rows.append((f"MQTT push -> state topic p50/p99 (ms): demo rate ; {g('mqtt', 'fleet_spokes')} spokes",
                     f"{g('mqtt', 'demo_latency_p50_ms')} / {g('mqtt', 'demo_latency_p99_ms')} ; "
                     f"{g('mqtt', 'fleet_latency_p50_ms')} / {g('mqtt', 'fleet_latency_p99_ms')}"))
    if g("notify", "crossing_to_received"):
        rows.append((f"alert -> notification received, {g('notify', 'alerts')} alerts on the demo: from the reading "
                     f"above the threshold p50/p99 (s; target {g('notify', 'target_s')}); from pin() p50/p99 (s)",
                     f"{g('notify', 'crossing_to_received', 'p50_s')} / {g('notify', 'crossing_to_received', 'p99_s')}"
                     f"{'' if g('notify', 'meets_target_p99') else ' (over target)'}; "
                     f"{g('notify', 'pin_to_received', 'p50_s')} / {g('notify', 'pin_to_received', 'p99_s')}"))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run everything, print the table, write bench/results.json."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="shorter runs (minutes, not a quarter of an hour)")
    args = p.parse_args(argv)
    results = run_all(args.quick)
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2))
    rows = table(results)
    width = max(len(w) for w, _ in rows)
    now_width = max(len(v) for _, v in rows)
    print("\n" + "=" * (width + now_width + 30))
    print(f"{'':<{width}}  {'now':<{now_width}}  before the scale round")
    for what, value in rows:
        print(f"{what:<{width}}  {value:<{now_width}}  {before(what)}")
    print(f"\nall figures: {ROOT / 'bench' / 'results.json'}")


if __name__ == "__main__":
    main()
