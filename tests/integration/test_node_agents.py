"""Node agents on a real Pyro5 name server: registration, forwarding, REPL access, idempotent push."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest
from Pyro5.api import Proxy

from actors.client import connect
from actors.errors import BadRequest
from hal.errors import ActuatorArgumentError
from tests.helpers import HOST, wait_for


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as res:
        assert res.headers["Content-Type"].startswith("application/json")
        return json.load(res)


def test_agent_forwards_spoke_readings_to_hub_api(cluster, pi4):
    body = get_json(cluster.url("/api/readings"))
    nodes = {n["name"]: n for n in body["nodes"]}
    assert set(nodes) == {"hub", "pi4"}
    spoke = nodes["pi4"]
    assert (spoke["role"], spoke["profile"], spoke["online"]) == ("spoke", "wasm", True)
    temp = spoke["sensors"]["dht22"]["temperature"]
    assert temp["unit"] == "°C" and -10 < temp["value"] < 60 and not temp["stale"]
    assert spoke["sensors"]["monitor"]["memory_total"]["value"] > 0
    assert nodes["hub"]["role"] == "hub" and nodes["hub"]["sensors"]["monitor"]


def test_agent_registers_every_actor_with_metadata(cluster, pi4):
    listing = connect(HOST, cluster.ns_port).listing()
    names = {n for n in listing if n.startswith("harvester.pi4.")}
    assert names == {"harvester.pi4.dht22", "harvester.pi4.monitor", "harvester.pi4.leds",
                     "harvester.pi4.buzzer", "harvester.pi4.agent", "harvester.pi4.jobs", "harvester.pi4.plugins",
                     "harvester.pi4.room"}  # mock mode: the emulated room, for the REPL
    tags = set(listing["harvester.pi4.dht22"][1])
    assert {"node:pi4", "role:spoke", "kind:sensor", "quantity:temperature", "quantity:humidity", "api:1"} <= tags
    assert "kind:aggregator" in listing["harvester.hub.aggregator"][1]


def test_repl_client_reads_and_finds_by_metadata(cluster, pi4):
    fleet = connect(HOST, cluster.ns_port)
    assert fleet.nodes() == ["hub", "pi4"]
    readings = fleet["pi4"]["dht22"].read()
    assert {r["quantity"] for r in readings} == {"temperature", "humidity"}
    assert all(r["node"] == "pi4" and r["sensor"] == "dht22" for r in readings)
    latest = fleet.pi4.dht22.latest()
    assert {r["quantity"] for r in latest} == {"temperature", "humidity"} and "stale" in latest[0]
    assert "read" in dir(fleet["pi4"]["dht22"]) and "set_pixel" in fleet["pi4"]["leds"].describe()
    temperature_sensors = fleet.names(meta_all={"quantity:temperature"})
    assert "harvester.pi4.dht22" in temperature_sensors


def test_plain_pyro5_proxy_with_default_serializer_works(cluster, pi4):
    with Proxy(f"PYRONAME:harvester.pi4.dht22@{HOST}:{cluster.ns_port}") as proxy:
        proxy._pyroSerializer = "serpent"  # what a bare `import Pyro5.api` session uses
        proxy._pyroTimeout = 5
        readings = proxy.read()
    assert {r["quantity"] for r in readings} == {"temperature", "humidity"}


def test_remote_actuator_error_arrives_typed(cluster, pi4):
    leds = connect(HOST, cluster.ns_port)["pi4"]["leds"]
    with pytest.raises(ActuatorArgumentError, match="index"):
        leds.set_pixel(11, 255, 0, 0)
    state = leds.set_pixel(1, 255, 0, 0)
    assert state["pixels"][1] == [255, 0, 0]


def test_push_is_idempotent_and_rejects_bad_batches(cluster):
    agg = connect(HOST, cluster.ns_port)["hub"]["aggregator"]
    reading = {"sensor": "probe", "quantity": "temperature", "value": 20.5, "unit": "°C", "ts": 1_700_000_000.0}
    batch = {"node": "rover", "seq": 1, "readings": [reading]}
    first = agg.push([batch])
    stored = cluster.hub.role.hub.readings_stored
    again = agg.push([batch])
    assert first["acked"] == [1] and again["acked"] == [1] and again["duplicates"] == 1
    assert cluster.hub.role.hub.readings_stored == stored
    bad = {"node": "rover", "seq": 2, "readings": [{**reading, "value": float("nan")}]}
    good = {"node": "rover", "seq": 3, "readings": [reading]}
    with pytest.raises(BadRequest, match="finite"):
        agg.push([good, bad])
    assert cluster.hub.role.hub.readings_stored == stored  # all or nothing
    assert cluster.node_snapshot("rover")["last_seq"] == 1


def test_spoke_outbox_holds_readings_until_acknowledged(cluster, pi4):
    outbox = pi4.role.outbox
    wait_for(lambda: outbox.stats()["pending_batches"] == 0, what="outbox drained")
    seq_before = cluster.node_snapshot("pi4")["last_seq"]
    wait_for(lambda: cluster.node_snapshot("pi4")["last_seq"] > seq_before + 2, what="more batches acknowledged")


def test_harvester_call_prints_json(cluster, pi4):
    out = subprocess.run(
        [sys.executable, "-m", "actors.cli", "call", "harvester.pi4.dht22", "read", "--ns", f"{HOST}:{cluster.ns_port}"],
        capture_output=True, text=True, timeout=30, check=True).stdout
    assert {r["quantity"] for r in json.loads(out)} == {"temperature", "humidity"}
    bad = subprocess.run(
        [sys.executable, "-m", "actors.cli", "call", "harvester.pi4.nothing", "read", "--ns",
         f"{HOST}:{cluster.ns_port}"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 3 and "no actor 'harvester.pi4.nothing'" in bad.stderr


def test_listing_survives_an_entry_registered_without_metadata(cluster, pi4):
    with Proxy(f"PYRO:Pyro.NameServer@{HOST}:{cluster.ns_port}") as ns:
        ns.register("harvester.foreign.thing", f"PYRO:thing@{HOST}:1")  # a plain Pyro5 client, no metadata
    listing = connect(HOST, cluster.ns_port).listing()
    assert listing["harvester.foreign.thing"][1] == [] and "harvester.pi4.dht22" in listing


def test_probes_back_off_a_sender_with_no_agent_but_never_a_node_seen_before(cluster, monkeypatch):
    """An HTTP-only sender has no agent to ping: after one failed lookup it is looked up every
    NAMELESS_RECHECK, not every probe run. A node once reached (now refused) keeps being probed,
    so a restarted spoke shows online as soon as it registers again."""
    import actors.hub.prober as agent_mod

    lookups: list[str] = []

    class CountingProxy(agent_mod.Proxy):
        def fleet_health(self):  # the probe's only call: count it, then let Pyro5 resolve and fail
            lookups.append(str(self._pyroUri))
            return agent_mod.Proxy.__getattr__(self, "fleet_health")()

    monkeypatch.setattr(agent_mod, "Proxy", CountingProxy)
    agg = connect(HOST, cluster.ns_port)["hub"]["aggregator"]
    reading = {"sensor": "probe", "quantity": "temperature", "value": 20.5, "unit": "°C", "ts": 1_700_000_000.0}
    for node in ("rover", "lander"):
        agg.push([{"node": node, "seq": 1, "readings": [reading]}])
    cluster.hub.role.hub.set_reachable("lander", False)  # lander answered once and was then refused
    hub = cluster.hub
    for _ in range(3):
        hub.role.prober.run()
    rover = [u for u in lookups if ".rover." in u]
    lander = [u for u in lookups if ".lander." in u]
    assert len(rover) == 1, lookups
    assert len(lander) == 3, lookups
    assert cluster.node_snapshot("rover")["reachable"] is None  # push-based liveness, untouched
