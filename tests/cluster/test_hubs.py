"""Three hubs: any one killed, frozen or cut off, or two down at once, and the fleet carries on;
afterwards every hub holds every batch exactly once. Control state (acknowledgements, the
daily summary's runs) goes through Raft, which refuses anyone without the cluster secret."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import signal
import socket
import sqlite3
import struct
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from Pyro5.api import Proxy

from tests.cluster.conftest import ProcNode, have_root_netns
from tests.cluster.netns import lab
from tests.helpers import HOST, free_port, hub_db, reserve_port, wait_for, write_node_config
from tests.tsdb import Relay, Victoria, check_engine_holds, exported_upto, have_victoria

SECRET = "a-test-cluster-secret-0123456789"
SPOKE_SENSORS = [{"name": "monitor", "kind": "monitor", "interval": 0.5}]
HUB_SENSORS = [{"name": "monitor", "kind": "monitor", "interval": 2.0}]
HUBS = ("hub1", "hub2", "hub3")
SPOKES = ("sp1", "sp2")


def free_pair() -> int:
    """A port that is free, with the next one free too (a hub's Raft listens there)."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind((HOST, port + 1))
            except OSError:
                continue
        reserve_port(port + 1)
        return port
    raise RuntimeError("no two free ports in a row")


class HubFleet:
    """Three hubs and two spokes as processes (in namespaces when `ips` gives their addresses)."""

    def __init__(self, tmp: Path, ips: dict[str, str] | None = None, netns: dict[str, str] | None = None,
                 export: str | None = None) -> None:
        self.tmp, self.ips, self.netns = tmp, ips or {}, netns or {}
        # every hub exports to this engine; only the Raft leader sends
        self.export = f'[export]\nname = "vm"\nurl = "{export}"\nflush_interval = 0.5\n' if export else ""
        (tmp / "secret").write_text(SECRET + "\n")
        self.ns_port = {h: free_pair() for h in HUBS}
        self.web_port = {h: free_port() for h in HUBS}
        self.hosts = [f"{self.ip(h)}:{self.ns_port[h]}" for h in HUBS]
        self.nodes: dict[str, ProcNode] = {}

    def ip(self, name: str) -> str:
        return self.ips.get(name, HOST)

    def start(self) -> None:
        for hub in HUBS:
            cfg = write_node_config(self.tmp / f"{hub}.toml", hub, "hub", self.ns_port[hub], web_port=self.web_port[hub],
                                    sensors=HUB_SENSORS, host=self.ip(hub), hub_host=self.ip(hub),
                                    hub_hosts=self.hosts, cluster_secret=self.tmp / "secret", extra=self.export)
            self.nodes[hub] = ProcNode(hub, cfg, self.netns.get(hub)).start()
        for spoke in SPOKES:
            cfg = write_node_config(self.tmp / f"{spoke}.toml", spoke, "spoke", self.ns_port["hub1"],
                                    sensors=SPOKE_SENSORS, push_interval=0.5, host=self.ip(spoke),
                                    hub_host=self.ip("hub1"), hub_hosts=self.hosts)
            self.nodes[spoke] = ProcNode(spoke, cfg, self.netns.get(spoke)).start()

    def stop(self) -> None:
        for node in reversed(list(self.nodes.values())):
            if node.proc and node.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGCONT)
            node.stop()

    # -- what a hub says --------------------------------------------------------------------
    def api(self, hub: str, path: str, method: str = "GET", token: str | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(f"http://{self.ip(hub)}:{self.web_port[hub]}{path}", method=method,
                                     data=b"{}" if method == "POST" else None)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if method == "POST":
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def cluster(self, hub: str) -> dict[str, Any] | None:
        try:
            return self.api(hub, "/api/cluster")[1]
        except OSError:
            return None

    def leader(self, among: tuple[str, ...] = HUBS) -> str | None:
        """The hub of `among` every hub in `among` names as leader, with a majority behind it; None otherwise."""
        views = [self.cluster(h) for h in among]
        if not all(v is not None and v.get("has_quorum") for v in views):
            return None
        names = {v["leader"] for v in views}  # type: ignore[index]
        return names.pop() if len(names) == 1 and names <= set(among) else None

    def token(self, hub: str) -> str:
        return json.loads((self.tmp / f"state-{hub}" / "tokens.json").read_text())["operator"]

    def db(self, name: str, file: str = "hub.sqlite3") -> sqlite3.Connection:
        path = self.tmp / f"state-{name}" / file
        if file == "hub.sqlite3":
            return hub_db(path)
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)

    def held(self, hub: str, node: str) -> set[int]:
        try:
            with self.db(hub) as db:
                return {r[0] for r in db.execute("SELECT seq FROM batches WHERE node=?", (node,))}
        except sqlite3.OperationalError:
            return set()

    def produced(self, spoke: str) -> int:
        """The last seq the spoke has assigned."""
        with self.db(spoke, "outbox.sqlite3") as db:
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='batches'").fetchone()
        return row[0] if row else 0

    def pending(self, spoke: str) -> int:
        with self.db(spoke, "outbox.sqlite3") as db:
            return db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]

    def converged(self, timeout: float = 120) -> None:
        """Wait until every hub holds every batch each spoke had produced when this was called,
        then check that each holds each of them exactly once."""
        targets = {s: self.produced(s) for s in SPOKES}
        wait_for(lambda: all(set(range(1, t + 1)) <= self.held(h, s) for h in HUBS for s, t in targets.items()),
                 timeout=timeout, interval=0.5, what=f"every hub to hold every batch up to {targets}")
        for hub in HUBS:
            with self.db(hub) as db:
                for spoke, target in targets.items():
                    batches = db.execute("SELECT seq, readings FROM batches WHERE node=? AND seq<=? ORDER BY seq",
                                         (spoke, target)).fetchall()
                    assert [b[0] for b in batches] == list(range(1, target + 1))
                    expected = sum(len(json.loads(b[1])) for b in batches)
                    (stored,) = db.execute("SELECT COUNT(*) FROM readings WHERE node=? AND seq<=?",
                                           (spoke, target)).fetchone()
                    assert stored == expected, f"{hub}: {spoke} has {stored} readings stored for {expected} sent"
                    dupes = db.execute("SELECT sensor, quantity, ts FROM readings WHERE node=? GROUP BY 1, 2, 3 "
                                       "HAVING COUNT(*) > 1", (spoke,)).fetchall()
                    assert not dupes, f"{hub}: {spoke} readings stored twice: {dupes[:3]}"
        for spoke in SPOKES:
            with self.db(spoke, "outbox.sqlite3") as db:
                assert db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone() is None

    def raise_alert(self, alert: str, since: float) -> None:
        """Push a batch carrying an alert event to every hub's aggregator, as a spoke does."""
        event = {"plugin": "probe", "version": "1.0.0", "alert": alert, "state": "raised", "severity": "warning",
                 "message": "made hot by the test", "node": "prober", "sensor": None, "quantity": None,
                 "value": None, "ts": since, "since": since}
        seq = int(since * 1000)  # a new batch of the test's own node each time
        for hub in HUBS:
            with Proxy(f"PYRONAME:harvester.{hub}.aggregator@{self.ip(hub)}:{self.ns_port[hub]}") as agg:
                agg.push([{"node": "prober", "seq": seq, "readings": [], "alerts": [event]}], time.time())

    def alert_on(self, hub: str, alert: str) -> dict[str, Any] | None:
        try:
            status, body = self.api(hub, "/api/alerts?state=all")
        except OSError:
            return None
        return next((a for a in body["alerts"] if a["alert"] == alert), None) if status == 200 else None


@pytest.fixture
def fleet(tmp_path):
    engine = Victoria(tmp_path / "victoria").start() if have_victoria() else None
    relay = Relay(engine.write_url) if engine else None  # counts what the hubs sent twice
    f = HubFleet(tmp_path, export=relay.write_url if relay else None)
    f.engine, f.relay = engine, relay
    f.start()
    try:
        yield f
    finally:
        f.stop()
        if engine is not None:
            relay.close()
            engine.stop()


def exports(fleet: HubFleet, hub: str) -> dict[str, Any] | None:
    try:
        return fleet.api(hub, "/api/exports")[1]["exports"][0]
    except OSError:
        return None


def caught_up(fleet: HubFleet, leader: str) -> bool:
    """The leader's export has sent everything it holds; the others stand by."""
    mine = exports(fleet, leader)
    return bool(mine) and mine["state"] == "ok" and mine["backlog"] == 0 and all(
        (e := exports(fleet, h)) is None or e["state"] == "standby" for h in HUBS if h != leader)


def grows(fleet: HubFleet, hubs: tuple[str, ...], by: int = 5, timeout: float = 30) -> None:
    """Wait until each of `hubs` holds `by` more of sp1's batches than now: readings keep landing."""
    start = {h: max(fleet.held(h, "sp1"), default=0) for h in hubs}
    wait_for(lambda: all(max(fleet.held(h, "sp1"), default=0) >= start[h] + by for h in hubs), timeout=timeout,
             interval=0.3, what=f"readings to keep landing on {hubs}")


@pytest.mark.slow
def test_three_hubs_ride_out_a_killed_leader_a_frozen_hub_and_two_down(fleet):
    f = fleet
    first = wait_for(f.leader, timeout=60, what="the three hubs to elect a leader")
    grows(f, HUBS)
    if f.engine is not None:  # one hub sends, and it has sent what it holds
        # enough sent that a new leader starting over would resend far more than a page or two
        wait_for(lambda: caught_up(f, first) and sum(f.relay.lines.values()) >= 150, timeout=30,
                 what=f"{first} to export, the others to stand by")
        sent_before_failover = sum(f.relay.lines.values())

    # (1) the leader SIGKILLed: the others elect a new one and keep taking readings
    f.nodes[first].kill()
    others = tuple(h for h in HUBS if h != first)
    t0 = time.monotonic()
    second = wait_for(lambda: f.leader(others), timeout=20, what="a new leader among the two left")
    print(f"new leader {second} {time.monotonic() - t0:.1f} s after {first} was killed")
    grows(f, others)
    status, body = f.api(others[0], "/api/readings")
    assert status == 200 and {"sp1", "sp2"} <= {n["name"] for n in body["nodes"]}
    f.nodes[first].start()
    f.converged()

    # (2) a hub SIGSTOPped for 30 s: the fleet carries on, the frozen one catches up
    frozen = wait_for(f.leader, timeout=30, what="a leader of all three again")
    os.killpg(f.nodes[frozen].proc.pid, signal.SIGSTOP)
    t_stop = time.monotonic()
    others = tuple(h for h in HUBS if h != frozen)
    wait_for(lambda: f.leader(others), timeout=20, what="a leader while one hub is frozen")
    grows(f, others)
    wait_for(lambda: time.monotonic() - t_stop >= 30, timeout=40, interval=1, what="30 s frozen")
    os.killpg(f.nodes[frozen].proc.pid, signal.SIGCONT)
    f.converged()

    # (5) an alert acknowledged on one hub is acknowledged on every hub. The thawed hub may call
    # an election as it wakes (an acknowledgement then gets a clear 503 and is not done): the
    # acknowledgement is asked for once all three agree on a leader again.
    wait_for(f.leader, timeout=30, what="a leader of all three after the thaw")
    f.raise_alert("hot", time.time())
    alert = wait_for(lambda: all(f.alert_on(h, "hot") for h in HUBS) and f.alert_on("hub2", "hot"), timeout=20,
                     what="the alert on every hub")
    t0 = time.monotonic()
    status, body = f.api("hub2", f"/api/alerts/{alert['id']}/ack", "POST", f.token("hub2"))
    assert status == 200, body
    wait_for(lambda: all(f.alert_on(h, "hot")["acknowledged"] for h in HUBS), timeout=10,
             what="the acknowledgement on every hub")
    print(f"acknowledged on all three hubs {time.monotonic() - t0:.2f} s after the request")

    # (4) two hubs down: the survivor serves the dashboard, refuses control writes clearly,
    # and the spokes keep their batches (no majority has them) until the others return
    f.raise_alert("cold", time.time())
    cold = wait_for(lambda: f.alert_on("hub3", "cold"), timeout=20, what="the second alert on hub3")
    for hub in ("hub1", "hub2"):
        f.nodes[hub].kill()
    wait_for(lambda: f.cluster("hub3") and not f.cluster("hub3")["has_quorum"], timeout=20,
             what="hub3 to see it has no majority")
    status, body = f.api("hub3", "/api/readings")
    assert status == 200 and {"sp1", "sp2"} <= {n["name"] for n in body["nodes"]}
    status, body = f.api("hub3", f"/api/alerts/{cold['id']}/ack", "POST", f.token("hub3"))
    assert status == 503 and "needs 2 of the 3 hubs" in body["error"], body
    assert not f.alert_on("hub3", "cold")["acknowledged"]
    wait_for(lambda: f.pending("sp1") >= 10 and f.pending("sp2") >= 10, timeout=30,
             what="batches to stay in the spokes' outboxes without a majority")
    for hub in ("hub1", "hub2"):
        f.nodes[hub].start()
    f.converged()
    wait_for(lambda: f.pending("sp1") < 10 and f.pending("sp2") < 10, timeout=30,
             what="the outboxes to drain once a majority is back")

    # (6) the leaders took turns exporting: the engine holds every reading once, except for the few
    # pages a new leader could not know were sent; a hub restarting from scratch would resend them all
    if f.engine is not None:
        leader = wait_for(f.leader, timeout=30, what="a leader of all three")
        wait_for(lambda: caught_up(f, leader), timeout=60, what=f"{leader}'s export to catch up")
        db = f.tmp / f"state-{leader}" / "hub.sqlite3"
        cursor, _ = exported_upto(db, "vm")
        check_engine_holds(db, f.engine, cursor,
                           peers=tuple(f.tmp / f"state-{h}" / "hub.sqlite3" for h in HUBS if h != leader))
        doubled = f.relay.resent()
        print(f"{cursor} readings exported across the fail-overs; {doubled} sent twice "
              f"({sent_before_failover} had been sent before the first kill)")
        assert doubled < sent_before_failover / 2


@pytest.mark.slow
@pytest.mark.skipif(not have_root_netns(), reason="network namespaces need root and iproute2")
def test_three_hubs_ride_out_the_leader_cut_off_for_60s(tmp_path):
    with lab() as net:
        ips = {name: net.add_host(name) for name in (*HUBS, *SPOKES)}
        f = HubFleet(tmp_path, ips, {name: net.ns(name) for name in ips})
        f.start()
        try:
            cut = wait_for(f.leader, timeout=60, what="the three hubs to elect a leader")
            grows(f, HUBS)
            net.cut(cut)
            t0 = time.monotonic()
            others = tuple(h for h in HUBS if h != cut)
            wait_for(lambda: f.leader(others), timeout=20, what="a leader on the side with the majority")
            grows(f, others)
            wait_for(lambda: time.monotonic() - t0 >= 60, timeout=70, interval=1, what="60 s cut off")
            net.mend(cut)
            wait_for(f.leader, timeout=30, what="one leader of all three after the cut")
            f.converged()
        finally:
            f.stop()


# -- in one process: Raft with an injected clock, and a peer without the secret -----------
def hub_group(tmp: Path, name: str, ports: dict[str, int]):
    """A real HubGroup (Raft on loopback) over a real store, from a real config."""
    from actors.hub.group import HubGroup
    from actors.hub.state import Hub
    from actors.hub.store import Store
    from actors.node.config import parse_config

    (tmp / "secret").write_text(SECRET)
    cfg = parse_config({"node": {"name": name, "role": "hub", "state_dir": str(tmp / name)},
                        "hub": {"host": HOST, "nameserver_port": ports[name],
                                "hosts": [f"{HOST}:{p}" for p in ports.values()],
                                "cluster_secret_file": str(tmp / "secret")}}, base_dir=tmp)
    hub = Hub(Store(tmp / name / "hub.sqlite3", keep_batches=True))
    group = HubGroup(cfg, hub)
    group.start()
    return group


def summary_runner(group, clock):
    from apscheduler.schedulers.background import BackgroundScheduler

    from actors.node.jobs import JobContext, JobRunner
    from actors.node.jobspec import JobSpec

    spec = JobSpec("daily-summary", "daily_summary", cron="5 0 * * *")
    return JobRunner([spec], BackgroundScheduler(timezone="UTC"), JobContext(group.name, None, group.hub),
                     clock=clock)


def test_daily_summary_runs_once_across_a_leader_failover_at_its_scheduled_time(tmp_path):
    from actors.hub.store import Batch, Row

    ports = {h: free_pair() for h in HUBS}
    groups = {h: hub_group(tmp_path, h, ports) for h in HUBS}
    try:
        # 00:05:00 UTC: the daily summary's slot for 2026-11-30
        now = [datetime.fromisoformat("2026-12-01T00:05:00+00:00").timestamp()]
        runners = {h: summary_runner(g, lambda: now[0]) for h, g in groups.items()}
        day_ts = now[0] - 12 * 3600
        for g in groups.values():  # the same readings on every hub, as anti-entropy leaves them
            g.hub.store.commit_batches([Batch("sp1", 1, [Row("m", "temperature", 21.5, "C", day_ts, "ok", None)], [])],
                                       day_ts, {"sp1": day_ts})
        leader = wait_for(lambda: next((h for h, g in groups.items() if g.leads()), None), timeout=20,
                          what="a leader")
        # the leader dies at the scheduled time, before its job ran
        groups.pop(leader).close()
        survivors = dict(groups)
        for h in survivors:  # their own schedulers fire now: whoever does not lead skips
            runners[h].run("daily-summary")
        wait_for(lambda: any(g.leads() for g in survivors.values()), timeout=20, what="a new leader")
        now[0] += 10  # the catch-up job's next look
        ran = [h for h in survivors if runners[h].catch_up()]
        wait_for(lambda: all(g.hub.store.job_run("daily-summary", "2026-11-30") for g in survivors.values()),
                 timeout=10, what="the run recorded on both survivors")
        for h in survivors:  # later looks and runs find it done
            assert runners[h].catch_up() == []
            runners[h].run("daily-summary")
        runs = {h: g.hub.store.job_run("daily-summary", "2026-11-30") for h, g in survivors.items()}
        assert len({r["hub"] for r in runs.values()}) == 1 and len(ran) <= 1
        for g in survivors.values():
            rows = g.hub.store.summaries("2026-11-30")
            assert [(r["node"], r["mean"], r["n"]) for r in rows] == [("sp1", 21.5, 1)]
            with sqlite3.connect(g.hub.store.path) as db:
                assert db.execute("SELECT COUNT(*) FROM job_runs").fetchone()[0] == 1
        # the old leader returns: it learns the run from the Raft log, and does not run it again
        groups[leader] = back = hub_group(tmp_path, leader, ports)
        wait_for(lambda: back.hub.store.job_run("daily-summary", "2026-11-30"), timeout=20,
                 what="the returning hub to learn the run")
        assert summary_runner(back, lambda: now[0]).catch_up() == []
        assert back.hub.store.summaries("2026-11-30")[0]["mean"] == 21.5
    finally:
        for g in groups.values():
            g.close()


class _Boom:
    """Unpickling this would create a file: proof that nothing unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_raft_refuses_a_peer_without_the_secret_before_unpickling_and_logs_it(tmp_path, caplog):
    ports = {h: free_pair() for h in HUBS}
    groups = {h: hub_group(tmp_path, h, ports) for h in HUBS}
    try:
        wait_for(lambda: any(g.leads() for g in groups.values()), timeout=20, what="a leader")
        raft_port = ports["hub1"] + 1
        marker = tmp_path / "unpickled"
        caplog.set_level(logging.WARNING, logger="actors.hub.cluster")
        for payload in (pickle.dumps(_Boom(str(marker))), pickle.dumps(["introduce", "x", "y"])):
            with socket.create_connection((HOST, raft_port), timeout=5) as s:
                s.sendall(struct.pack("i", len(payload)) + payload)
                s.settimeout(5)
                with contextlib.suppress(OSError):
                    assert s.recv(100) == b""  # closed without an answer
        wait_for(lambda: "did not prove the cluster secret" in caplog.text, timeout=10,
                 what="the refusal in the log")
        assert not marker.exists()
        # a pysyncobj member with another secret changes nothing either
        from pysyncobj import SyncObj, SyncObjConf

        from actors.hub.cluster import ControlState

        intruder_state = ControlState(lambda *_: None)
        intruder = SyncObj(f"{HOST}:{free_pair()}", [f"{HOST}:{p + 1}" for p in ports.values()],
                           SyncObjConf(password="wrong-secret-0123456789", commandsWaitLeader=False,
                                       connectionRetryTime=0.2),
                           consumers=[intruder_state])
        try:
            with contextlib.suppress(Exception):
                intruder_state.acknowledge("forged", "intruder", 1.0, sync=True, timeout=2)
        finally:
            intruder.destroy()
        assert all("forged" not in g.raft.acks() for g in groups.values())
        assert all(g.raft.status()["has_quorum"] for g in groups.values() if g.leads())
    finally:
        for g in groups.values():
            g.close()
