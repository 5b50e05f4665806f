"""GET /metrics on a real hub + spoke: Prometheus text format 0.0.4 with base units, checked by
Debian's promtool (package prometheus) when it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.helpers import wait_for
from tests.integration.web_client import Web
from web.metrics import Exposition

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
PROMTOOL = shutil.which("promtool")


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Samples by (name, labels); asserts every family has HELP and TYPE before its samples."""
    samples, declared = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            declared.add(line.split()[2])
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            assert m, line
            name = m.group(1)
            assert name in declared or re.sub(r"_(total|bucket|sum|count)$", "", name) in declared, line
            samples[(name, frozenset(LABEL.findall(m.group(2) or "")))] = float(m.group(3))
    return samples


def value(samples: dict, name: str, **labels: str) -> float | None:
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= ls]
    return found[0] if found else None


def promtool_check(text: str) -> None:
    out = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr


def scrape(web: Web) -> tuple[str, dict]:
    status, headers, text = web.request("GET", "/metrics")
    assert status == 200 and headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return text, parse(text)


def test_metrics_fleet_in_base_units(cluster, pi4):
    web = Web(cluster.web_port)
    # the bundled plugins run on pi4 (the default plugin folder): their counters arrive via plugins.list()
    text, samples = wait_for(
        lambda: (r := scrape(web)) and (value(r[1], "harvester_plugin_calls_total", node="pi4", plugin="room_temperature") or 0) > 0
        and r,
        what="plugin counters in /metrics")
    assert value(samples, "harvester_node_up", node="pi4", role="spoke", profile="wasm") == 1
    assert value(samples, "harvester_node_up", node="hub", role="hub") == 1
    snap = cluster.node_snapshot("pi4")
    assert value(samples, "harvester_node_last_seen_timestamp_seconds", node="pi4") > 1.6e9
    temp = value(samples, "harvester_temperature_celsius", node="pi4", sensor="dht22")
    assert temp == pytest.approx(snap["sensors"]["dht22"]["temperature"]["value"], abs=3)
    assert 0 <= value(samples, "harvester_relative_humidity_ratio", node="pi4", sensor="dht22") <= 1
    total = value(samples, "harvester_memory_total_bytes", node="pi4", sensor="monitor")
    assert total == pytest.approx(snap["sensors"]["monitor"]["memory_total"]["value"] * 1024 * 1024, rel=0.01)
    assert 0 <= value(samples, "harvester_cpu_load_ratio", node="pi4", sensor="monitor") <= 1
    assert value(samples, "harvester_reading_stale", node="pi4", sensor="dht22", quantity="temperature") == 0
    assert value(samples, "harvester_outbox_pending_batches", node="pi4") >= 0
    assert value(samples, "harvester_outbox_dropped_batches_total", node="pi4") == 0
    assert value(samples, "harvester_outbox_unsynced_batches", node="pi4") == 0
    assert value(samples, "harvester_outbox_rejected_batches", node="pi4") == 0
    assert value(samples, "harvester_node_clock_synced", node="pi4") == 1  # mock mode: the emulated clock is set
    assert value(samples, "harvester_node_restarts_total", node="pi4") == 0
    assert value(samples, "harvester_hub_readings_stored_total") > 0
    assert value(samples, "harvester_hub_rejected_pushes_total") == 0
    assert value(samples, "harvester_hub_unindexed_pushes") >= 0 and value(samples, "harvester_hub_indexer_errors_total") == 0
    assert value(samples, "harvester_plugin_traps_total", node="pi4", plugin="room_temperature") == 0
    assert value(samples, "harvester_plugin_up", node="pi4", plugin="room_temperature") == 1
    assert value(samples, "harvester_actor_up", node="pi4", actor="buzzer") == 1
    assert value(samples, "harvester_alerts_active", severity="critical", acknowledged="false") == 0
    assert "# TYPE harvester_hub_duplicate_batches_total counter" in text
    assert not [n for n, _ in samples if "percent" in n]  # ratios, never percent


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus; make system-deps)")
def test_metrics_pass_promtool(cluster, pi4):
    wait_for(lambda: value(scrape(Web(cluster.web_port))[1], "harvester_plugin_calls_total", node="pi4") is not None,
             what="plugin counters")
    text, _ = scrape(Web(cluster.web_port))
    promtool_check(text)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus; make system-deps)")
def test_metrics_escape_label_values():
    out = Exposition()
    out.add("harvester_test_ratio", "gauge", 'help with \\ and\nnewline', 0.5, node='a"b\\c\nd')
    text = out.render()
    assert 'node="a\\"b\\\\c\\nd"' in text and "help with \\\\ and\\nnewline" in text
    promtool_check(text)


def test_metrics_unavailable_readings_are_left_out(cluster):
    from web.metrics import _readings

    out = Exposition()
    node = {"name": "pi4", "sensors": {"dht22": {"temperature": {
        "value": None, "unit": "°C", "ts": 1.0, "quality": "unavailable", "reason": "EIO", "stale": True}}}}
    _readings(out, [node])
    samples = parse(out.render())
    assert value(samples, "harvester_reading_available", node="pi4", quantity="temperature") == 0
    assert value(samples, "harvester_temperature_celsius", node="pi4") is None
