"""Export to a real VictoriaMetrics on loopback: a demo run, an engine down for 60 s, a hub SIGKILLed
mid-export, and a wrong password. A relay in front of the engine counts every line it took, so
the tests see exactly what was sent twice (nothing, or the one page in flight at a kill)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from actors.cli.main import main
from tests.cluster.conftest import ProcCluster
from tests.helpers import HOST, free_port, wait_for
from tests.tsdb import (
    SKIP_REASON,
    Relay,
    Victoria,
    api,
    check_engine_holds,
    expected_samples,
    exported_upto,
    have_victoria,
)

pytestmark = pytest.mark.skipif(not have_victoria(), reason=SKIP_REASON)
SENSORS = [{"name": "dht22", "kind": "dht22", "interval": 0.5}, {"name": "monitor", "kind": "monitor", "interval": 0.5}]


def export_table(url: str, **extra: Any) -> str:
    lines = ["[export]", 'name = "vm"', f'url = "{url}"', "flush_interval = 0.5"]
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in extra.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def victoria(tmp_path):
    v = Victoria(tmp_path / "victoria").start()
    try:
        yield v
    finally:
        v.stop()


@pytest.fixture
def relay(victoria):
    r = Relay(victoria.write_url)
    try:
        yield r
    finally:
        r.close()


WATCHED = {"temperature", "humidity", "pressure", "iaq", "cpu_load", "rtt"}
DEMO_READINGS = 150  # about 20 s of the demo fleet


def test_every_reading_of_a_demo_run_reaches_the_engine_with_its_tags(tmp_path, victoria, relay):
    web, ns = free_port(), free_port()
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "actors.cli", "demo", "--port", str(web), "--ns-port", str(ns),
                             "--state-dir", str(state), "--export", relay.write_url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    db = state / "hub" / "hub.sqlite3"
    try:
        def caught_up_on_the_fleet() -> bool:
            if not db.exists():
                return False
            cursor, top = exported_upto(db, "demo")
            sent = [dict(labels) for labels, _, _ in expected_samples(db, cursor)]
            return (cursor == top >= DEMO_READINGS and {"hub", "pi4", "pizero"} <= {x["node"] for x in sent}
                    and {x["quantity"] for x in sent} >= WATCHED)
        wait_for(caught_up_on_the_fleet, timeout=120, interval=0.5,
                 what="the engine to hold every kind of reading of all three nodes")
        exports = api(f"http://{HOST}:{web}/api/exports")["exports"]
        assert [(e["name"], e["state"]) for e in exports] == [("demo", "ok")]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert "every reading goes to " + relay.write_url in out
    cursor, _ = exported_upto(db, "demo")
    n = check_engine_holds(db, victoria, cursor)
    assert {dict(labels)["quantity"] for labels, _, _ in victoria.samples()} >= WATCHED
    assert relay.resent() == 0
    print(f"{n} readings of the demo run are in VictoriaMetrics")


def test_an_engine_down_for_60s_catches_up_with_nothing_missing_or_doubled(cluster_factory, victoria, relay,
                                                                          capsys):
    cluster = cluster_factory(free_port(), extra=export_table(relay.write_url))
    exporter = cluster.hub.role.exporters[0]
    db = cluster.hub.role.hub.store.path
    cluster.start_node("pi4", sensors=SENSORS)
    wait_for(lambda: exporter.sent > 100, what="readings flowing to the engine")

    victoria.stop()
    down = time.monotonic()
    stored_then = exported_upto(db, "vm")[1]

    def down_for_a_minute() -> bool:
        s = exporter.status()
        assert s["state"] in ("ok", "retrying"), s  # never stopped by an engine that is merely away
        return time.monotonic() - down >= 60 and s["state"] == "retrying"
    wait_for(down_for_a_minute, timeout=120, interval=1, what="60 s with the engine down")
    status = api(cluster.url("/api/exports"))["exports"][0]
    # the relay answers 502 for the engine that refuses its connections
    assert status["state"] == "retrying" and "HTTP 502" in status["last_error"] and status["backlog"] > 500
    assert exported_upto(db, "vm")[1] > stored_then + 500  # ingest went on meanwhile
    # an engine away is no fault of the hub's: healthy, with the export's state on its own line
    assert main(["health", "--ns", f"{HOST}:{cluster.ns_port}", "--node", "hub"]) == 0
    out = capsys.readouterr().out
    assert "export vm: retrying" in out and "behind (oldest" in out and "HTTP 502" in out, out

    victoria.start()
    wait_for(lambda: exporter.status()["state"] == "ok" and exporter.status()["backlog"] == 0, timeout=60,
             what="the exporter to catch up")
    cluster.stop_node("pi4")
    wait_for(lambda: exporter.backlog()[0] == 0, what="the last readings out")
    cursor, _ = exported_upto(db, "vm")
    n = check_engine_holds(db, victoria, cursor)
    assert relay.resent() == 0
    print(f"{n} readings in the engine after a 60 s outage; none missing, none twice")


@pytest.mark.slow
def test_a_hub_sigkilled_mid_export_resumes_from_its_cursor(tmp_path, victoria):
    proxy = Relay(victoria.write_url, delay=0.1)
    proxy.down = True
    procs = ProcCluster(tmp_path, free_port(), free_port())
    db = procs.state("hub") / "hub.sqlite3"
    page = 40
    try:
        hub = procs.add("hub", "hub", sensors=[{"name": "monitor", "kind": "monitor", "interval": 0.5}],
                        extra=export_table(proxy.write_url, batch_size=page))
        procs.add("pi4", sensors=SENSORS, push_interval=0.5)
        wait_for(lambda: db.exists() and exported_upto(db, "vm")[1] > 1500, timeout=90, interval=0.5,
                 what="a backlog while the engine is away")
        proxy.down = False
        wait_for(lambda: exported_upto(db, "vm")[0] > 5 * page, timeout=60, interval=0.05, what="the export under way")
        hub.kill()
        cursor_at_kill, top = exported_upto(db, "vm")
        assert cursor_at_kill < top - 10 * page, "the export finished before the kill: the test proves nothing"
        hub.start()
        wait_for(lambda: exported_upto(db, "vm")[0] > cursor_at_kill + page, timeout=60, interval=0.2,
                 what="the restarted hub to export again")
        procs.nodes.pop("pi4").stop()
        wait_for(lambda: (lambda c, t: c == t)(*exported_upto(db, "vm")), timeout=120, interval=0.5,
                 what="the restarted hub to catch up")
        cursor, _ = exported_upto(db, "vm")
        # At most the page in flight at the kill goes out twice: the restart began at the cursor.
        check_engine_holds(db, victoria, cursor)
        resent = proxy.resent()
        assert resent <= page
        print(f"killed at cursor {cursor_at_kill} of {top}; {resent} readings sent twice after the restart")
    finally:
        for node in reversed(list(procs.nodes.values())):
            node.stop()
        proxy.close()


def test_a_wrong_password_stops_the_target_with_the_error_shown(cluster_factory, tmp_path, capsys):
    engine = Victoria(tmp_path / "locked", auth=("harvester", "right-one")).start()
    try:
        (tmp_path / "wrong").write_text("wrong-one\n")
        (tmp_path / "right").write_text("right-one\n")
        extra = (export_table(engine.write_url, name="locked", username="harvester",
                              password_file=str(tmp_path / "wrong")).replace("[export]", "[[export]]")
                 + export_table(engine.write_url, name="open", username="harvester",
                                password_file=str(tmp_path / "right")).replace("[export]", "[[export]]")
                 ).replace('name = "vm"\n', "")
        cluster = cluster_factory(free_port(), extra=extra)
        locked, good = cluster.hub.role.exporters
        wait_for(lambda: locked.stopped and good.sent > 0, what="one target stopped, the other sending")
        assert "HTTP 401" in locked.stopped
        requests_then = engine.rows_inserted()
        body = api(cluster.url("/api/exports"))["exports"]
        assert {e["name"]: e["state"] for e in body} == {"locked": "stopped", "open": "ok"}
        assert "HTTP 401" in next(e for e in body if e["name"] == "locked")["last_error"]
        with urllib.request.urlopen(cluster.url("/metrics"), timeout=10) as res:
            metrics = res.read().decode()
        assert 'harvester_export_stopped{target="locked"} 1' in metrics
        assert main(["health", "--ns", f"{HOST}:{cluster.ns_port}", "--node", "hub"]) == 1
        err = capsys.readouterr().err
        assert "export locked stopped: HTTP 401" in err, err
        wait_for(lambda: good.sent > 50, what="the good target to keep sending")
        assert engine.rows_inserted() > requests_then  # the engine is reachable; only the password is wrong
        assert locked.sent == 0
    finally:
        engine.stop()
