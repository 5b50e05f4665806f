"""The REPL and the CLI as a new user meets them, on a real name server and nodes on 127.0.0.1.

The fleet as a mapping, Tab completion, the readings table, `jobs run` without --node, and
what the CLI says about a node that accepts calls but never answers (a frozen node)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from Pyro5.api import Daemon, Proxy, expose

from actors.cli.fleet import enable_completion
from actors.client import NotInFleet, Readings, connect
from tests.helpers import CLEAR_LEDS_JOB, HOST, wait_for

JOBS = CLEAR_LEDS_JOB + '''
[[jobs]]
name = "rollup"
interval = 3600
call = "harvester.pi4.leds.fill"
args = [0, 0, 0]
'''


def cli(ns_port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """`harvester ARGS --ns 127.0.0.1:PORT` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "actors.cli", *args, "--ns", f"{HOST}:{ns_port}"],
                          capture_output=True, text=True, timeout=120)


def completions(namespace: dict[str, Any], text: str) -> list[str]:
    """What the shell's completer offers for `text` (readline stubbed: no terminal here)."""

    class Readline:
        def set_completer(self, fn: Any) -> None:
            self.complete = fn

        def parse_and_bind(self, line: str) -> None:
            return None

    rl = Readline()
    assert enable_completion(namespace, rl)
    out, state = [], 0
    while (match := rl.complete(text, state)) is not None:
        out.append(match)
        state += 1
    return out


def test_fleet_is_a_mapping_of_nodes_and_a_node_of_actors(cluster, pi4):
    fleet = connect(HOST, cluster.ns_port)
    assert "pi4" in fleet
    assert "nope" not in fleet
    assert {"hub", "pi4"} <= set(list(fleet))
    assert len(fleet) == len(list(fleet)) >= 2
    assert {"hub", "pi4"} <= set(fleet.keys())
    assert {"dht22", "leds", "buzzer", "agent"} <= set(list(fleet["pi4"]))
    assert "dht22" in fleet["pi4"]
    assert "nope" not in fleet["pi4"]
    assert fleet.pi4.dht22.name == "harvester.pi4.dht22"
    with pytest.raises(KeyError) as err:
        fleet["nope"]
    assert isinstance(err.value, NotInFleet) and "no node 'nope'" in str(err.value) and "pi4" in str(err.value)
    with pytest.raises(KeyError, match="node pi4 has no actor 'nope'"):
        fleet["pi4"]["nope"]


def test_tab_completes_nodes_actors_and_methods_from_the_name_server(cluster, pi4):
    namespace = {"fleet": connect(HOST, cluster.ns_port)}
    assert completions(namespace, "fleet.pi") == ["fleet.pi4"]
    assert completions(namespace, "fleet.pi4.le") == ["fleet.pi4.leds"]
    assert completions(namespace, "fleet.pi4.dht22.re") == ["fleet.pi4.dht22.read("]


def test_readings_show_as_a_table_and_stay_the_plain_list(cluster, pi4):
    fleet = connect(HOST, cluster.ns_port)
    latest = wait_for(lambda: fleet.pi4.dht22.latest(), what="a dht22 poll")
    assert isinstance(latest, Readings)
    lines = repr(latest).splitlines()
    assert lines[0].split() == ["SENSOR", "QUANTITY", "VALUE", "AGE", "QUALITY", "STALE"]
    assert any(line.startswith("dht22") and "temperature" in line and "°C" in line and " ago" in line
               for line in lines[1:])
    assert json.dumps(latest) == json.dumps(list(latest))


def test_jobs_run_finds_the_node_that_has_the_job(cluster):
    cluster.start_node("pi4", sensors=[{"name": "dht22", "kind": "dht22", "interval": 1.0}], leds=True, extra=JOBS)
    fleet = connect(HOST, cluster.ns_port)
    wait_for(lambda: fleet["pi4"]["jobs"].list(), what="pi4's jobs actor")

    run = cli(cluster.ns_port, "jobs", "run", "clear-leds")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["runs"] == 1
    assert fleet["pi4"]["leds"].state()["pixels"][5] == [0, 0, 40]

    run = cli(cluster.ns_port, "jobs", "run", "daily-summary")  # only the hub has it
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["name"] == "daily-summary"

    run = cli(cluster.ns_port, "jobs", "run", "rollup")  # the hub's and pi4's
    assert run.returncode == 2
    assert "job 'rollup' is on several nodes: hub, pi4; pick one with --node" in run.stderr

    run = cli(cluster.ns_port, "jobs", "run", "nope")
    assert run.returncode == 2
    assert "no node has a job named 'nope'" in run.stderr
    assert "clear-leds (pi4)" in run.stderr and "daily-summary (hub)" in run.stderr and "rollup (hub, pi4)" in run.stderr


class Frozen:
    """A node's actor whose process is alive for Pyro5 but never gets round to answering."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    @expose
    def ping(self) -> str:
        self.release.wait(60)
        return "pong"

    @expose
    def read(self) -> list[Any]:
        self.release.wait(60)
        return []

    @expose
    def list(self) -> list[Any]:
        self.release.wait(60)
        return []


@pytest.fixture
def frozen(cluster) -> Iterator[None]:
    """`harvester.frozen.dht22` and `harvester.frozen.jobs` in the cluster's name server, never answering."""
    release = threading.Event()
    daemon = Daemon(host=HOST, port=0)
    loop = threading.Thread(target=daemon.requestLoop, daemon=True)
    try:
        with Proxy(f"PYRO:Pyro.NameServer@{HOST}:{cluster.ns_port}") as ns:
            for actor, kind in (("dht22", "sensor"), ("jobs", "jobs")):
                uri = daemon.register(Frozen(release), objectId=f"harvester.frozen.{actor}")
                ns.register(f"harvester.frozen.{actor}", uri, metadata={f"kind:{kind}", "node:frozen"})
        loop.start()
        yield
    finally:
        release.set()  # let the blocked calls return so the daemon can stop
        daemon.shutdown()
        loop.join(10)


def assert_names_the_frozen_node(stderr: str, actor: str) -> None:
    assert f"node frozen did not answer: harvester.frozen.{actor}" in stderr
    assert "within 0.5 s (the call timeout" in stderr
    assert "running and not stopped" in stderr and "harvester health --node frozen" in stderr
    assert "receiving: timeout" not in stderr


def test_cli_says_which_node_did_not_answer_and_what_to_check(cluster, frozen):
    call = cli(cluster.ns_port, "call", "harvester.frozen.dht22", "read", "--timeout", "0.5")
    assert call.returncode == 3
    assert call.stderr.startswith("harvester call: node frozen did not answer: harvester.frozen.dht22.read()")
    assert_names_the_frozen_node(call.stderr, "dht22.read()")

    jobs = cli(cluster.ns_port, "jobs", "ls", "--timeout", "0.5")
    assert jobs.returncode == 3
    assert any(line.startswith("hub") and "daily-summary" in line for line in jobs.stdout.splitlines())
    assert_names_the_frozen_node(jobs.stderr, "jobs.list()")

    run = cli(cluster.ns_port, "jobs", "run", "daily-summary", "--timeout", "0.5")
    assert run.returncode == 3
    assert "hub has it, but frozen could not be asked; name the node with --node hub" in run.stderr
    assert_names_the_frozen_node(run.stderr, "jobs.list()")

    gone = cli(cluster.ns_port, "call", "harvester.nope.dht22", "read")
    assert gone.returncode == 3
    assert f"no actor 'harvester.nope.dht22' in the name server at {HOST}:{cluster.ns_port}" in gone.stderr

    ls = cli(cluster.ns_port, "ls", "--node", "frozen", "--timeout", "0.5")
    assert ls.returncode == 0
    assert "harvester.frozen.dht22" in ls.stdout and "no answer (0.5 s)" in ls.stdout and "live" not in ls.stdout
    assert_names_the_frozen_node(ls.stderr, "")
