"""Jobs on real nodes: the jobs actor, the CLI, and a call into an actor that never answers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from Pyro5.api import Proxy

from actors.client import connect
from tests.helpers import CLEAR_LEDS_JOB, HOST, wait_for

JOBS = CLEAR_LEDS_JOB + '''
[[jobs]]
name = "ghost"
interval = 3600
call = "harvester.ghost.buzzer.beep"
timeout = 0.5

[[jobs]]
name = "night"
kind = "quiet_hours"
start = "22:00"
end = "07:00"
'''


def test_jobs_actor_lists_and_runs_jobs_and_a_silent_actor_times_out(cluster):
    cluster.start_node("pi4", sensors=[{"name": "dht22", "kind": "dht22", "interval": 1.0}], leds=True, buzzer=True,
                       extra=JOBS)
    # a "spoke" that accepts TCP but never answers: a frozen agent
    silent = socket.socket()
    silent.bind((HOST, 0))
    silent.listen(8)
    try:
        with Proxy(f"PYRO:Pyro.NameServer@{HOST}:{cluster.ns_port}") as ns:
            ns.register("harvester.ghost.buzzer", f"PYRO:harvester.ghost.buzzer@{HOST}:{silent.getsockname()[1]}")
        fleet = connect(HOST, cluster.ns_port)
        jobs = wait_for(lambda: fleet["pi4"]["jobs"].list(), what="jobs actor")
        assert [j["name"] for j in jobs] == ["clear-leds", "ghost", "night"]
        assert all(j["next_run"] for j in jobs)

        rec = fleet["pi4"]["jobs"].run("clear-leds")
        assert rec["last_error"] is None and rec["runs"] == 1
        assert fleet["pi4"]["leds"].state()["pixels"][5] == [0, 0, 40]

        rec = fleet["pi4"]["jobs"].run("ghost")
        assert rec["last_error"] == "TimeoutError: harvester.ghost.buzzer.beep did not answer within 0.5s"

        out = subprocess.run([sys.executable, "-m", "actors.cli", "jobs", "ls", "--node", "pi4", "--ns",
                              f"{HOST}:{cluster.ns_port}"], capture_output=True, text=True, timeout=60, check=True)
        lines = out.stdout.splitlines()
        assert lines[0].split()[:3] == ["NODE", "JOB", "TRIGGER"]
        assert any("ghost" in line and "error: TimeoutError" in line for line in lines)
        assert any("night" in line and "quiet 22:00-07:00 UTC" in line for line in lines)

        run = subprocess.run([sys.executable, "-m", "actors.cli", "jobs", "run", "clear-leds", "--node", "pi4",
                              "--ns", f"{HOST}:{cluster.ns_port}"], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and json.loads(run.stdout)["runs"] == 2
    finally:
        silent.close()


def test_jobs_hub_runs_housekeeping_by_default(cluster):
    jobs = connect(HOST, cluster.ns_port)["hub"]["jobs"].list()
    assert {j["name"] for j in jobs} == {"rollup", "retention", "daily-summary"}
