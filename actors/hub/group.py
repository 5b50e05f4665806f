"""A hub among several: its Raft member (actors.hub.cluster), its anti-entropy with the peers
(actors.hub.replica), the singleton jobs only the leader runs, and the cluster view."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.base import BaseScheduler

from actors.base import Actor
from actors.errors import NoMajority
from actors.hub.cluster import RaftCluster, raft_address
from actors.hub.replica import SYNC_INTERVAL_S, PeerActor, Replica
from actors.hub.state import Hub
from actors.node.config import NodeConfig
from hal.files import InputFileError, read_text_limited
from nameserver.registry import home_tag

log = logging.getLogger(__name__)
MIN_SECRET_CHARS = 16
RECONCILE_S = 5.0


class ClusterConfigError(ValueError):
    """The cluster secret file is missing, unreadable or too short."""


def read_secret(cfg: NodeConfig) -> str:
    """The cluster secret, from hub.cluster_secret_file (first line, trimmed)."""
    path = cfg.cluster_secret_file
    if path is None:
        raise ClusterConfigError("hub.cluster_secret_file: missing (required with several hubs)")
    try:
        secret = read_text_limited(path, 4096).strip()
    except (OSError, InputFileError) as exc:
        raise ClusterConfigError(f"hub.cluster_secret_file: cannot read {path}: {exc}") from None
    if len(secret) < MIN_SECRET_CHARS:
        raise ClusterConfigError(f"hub.cluster_secret_file: {path} holds {len(secret)} characters; the cluster "
                                 f"secret needs at least {MIN_SECRET_CHARS} (make one with `openssl rand -hex 32`)")
    return secret


class HubGroup:
    """Everything a hub does because it has peers."""

    def __init__(self, cfg: NodeConfig, hub: Hub) -> None:
        self.name = cfg.name
        self.hub = hub
        self.own = (cfg.hub_host, cfg.nameserver_port)
        self.peers = [a for a in cfg.hub_hosts if a != self.own]
        self.secret = read_secret(cfg)
        self.replica = Replica(hub, cfg.name, self.own, self.peers)
        self.raft: RaftCluster | None = None
        self._state_dir = cfg.state_dir / "raft"
        self._settled: set[str] = set()  # acknowledgements this hub's store is known to hold
        hub.cluster = self

    def actors(self) -> list[Actor]:
        """The peer object other hubs pull batches from."""
        return [PeerActor(self.name, self.replica, {home_tag(*self.own)})]

    def start(self) -> None:
        """Join the Raft group (its port opens now; a peer not up yet is retried by pysyncobj)."""
        self.raft = RaftCluster(self.name, raft_address(*self.own), [raft_address(*p) for p in self.peers],
                                self._state_dir, self.secret, self._applied)

    def install(self, scheduler: BaseScheduler) -> None:
        """One anti-entropy job per peer, and the periodic reconcile of control state."""
        for addr in self.peers:
            scheduler.add_job(self.replica.sync, "interval", args=[addr], seconds=SYNC_INTERVAL_S,
                              id=f"sync:{addr[0]}:{addr[1]}")
        scheduler.add_job(self.reconcile, "interval", seconds=RECONCILE_S, id="cluster:reconcile")

    # -- what Raft applies on every hub ----------------------------------------------------
    def _applied(self, kind: str, args: tuple[Any, ...]) -> None:
        """Runs in pysyncobj's thread for each committed entry; a failure is logged (the store
        catches up at the next reconcile), never raised into the Raft engine."""
        try:
            if kind == "ack":
                self.hub.apply_ack(*args)
            elif kind == "run":
                job, key, hub, ran, result, output = args
                if isinstance(output, dict) and "daily_summary" in output:
                    self.hub.store.put_summary(key, output["daily_summary"])
                self.hub.store.record_job_run(job, key, hub, ran, result)
        except Exception:  # noqa: BLE001 (a full disk, a closed store at shutdown)
            log.exception("could not apply a committed %s to this hub's store", kind)

    def reconcile(self) -> None:
        """Apply acknowledgements this hub's store has not (their alert arrived after them), and
        make sure the cluster knows this hub's name. An acknowledgement the store holds is settled
        and not looked at again, so a quiet cluster's reconcile asks the store nothing."""
        if self.raft is None:
            return
        acks = self.raft.acks()
        pending = [k for k in acks if k not in self._settled]
        if pending:
            held = self.hub.store.episode_acks([json.loads(k) for k in pending])
            for key in pending:
                state = held.get(tuple(json.loads(key)))
                if state is False:
                    self.hub.store.acknowledge_episode(json.loads(key), *acks[key])
                if state is not None:
                    self._settled.add(key)
        self._settled &= set(acks)  # keys Raft dropped (oldest past MAX_ACKS) need no memory here
        self.raft.introduce()

    # -- control writes -------------------------------------------------------------------
    def acknowledge(self, key: str, by: str, ts: float) -> bool:
        """An alert acknowledgement for every hub (NoMajority when they cannot agree)."""
        if self.raft is None:
            raise NoMajority("this hub has not joined its cluster yet")
        return self.raft.acknowledge(key, by, ts)

    def leads(self) -> bool:
        """True when this hub is the Raft leader with a majority behind it."""
        return self.raft is not None and self.raft.is_leader()

    def exported(self, target: str, node: str, seq: int) -> bool:
        """True when some hub's export `target` sent batch (node, seq) (the exporters' Ledger)."""
        return self.raft is not None and self.raft.was_exported(target, node, seq)

    def notified(self, channel: str, key: str) -> bool:
        """True when some hub delivered notification `key` on `channel` (the notifier's Ledger)."""
        return self.raft is not None and self.raft.was_notified(channel, key)

    def mark_notified(self, channel: str, keys: list[str]) -> None:
        """Record delivered notifications for whichever hub leads next."""
        if self.raft is not None:
            self.raft.mark_notified(channel, keys)

    def mark_exported(self, target: str, pairs: list[tuple[str, int]]) -> None:
        """Record what an export sent, for whichever hub leads next."""
        if self.raft is not None:
            self.raft.mark_exported(target, pairs)

    def ran(self, job: str, key: str) -> dict[str, Any] | None:
        """The run recorded for a singleton job's slot, on this hub's store or in Raft's state."""
        done = self.hub.store.job_run(job, key)
        if done is None and self.raft is not None and self.raft.has_run(job, key):
            done = {"hub": "another hub", "ran": None, "result": "recorded"}
        return done

    def run_singleton(self, job: str, key: str, compute: Callable[[], tuple[str, Any]]) -> str:
        """Run a job's slot once in the cluster: on the leader, unless a run of it is recorded."""
        if not self.leads():
            return f"skipped: {self.leader_name() or 'no hub (an election is on)'} leads the cluster and runs it"
        done = self.ran(job, key)
        if done is not None:
            return f"skipped: {key} already ran on {done['hub']}"
        result, output = compute()
        assert self.raft is not None
        if not self.raft.record_run(job, key, result, output):
            return f"skipped: another hub recorded {key} first"
        return result

    # -- the view -------------------------------------------------------------------------
    def leader_name(self) -> str | None:
        """The leading hub's name, as far as this hub knows."""
        if self.raft is None:
            return None
        address = self.raft.leader_address()
        if address is None:
            return None
        if address == self.raft.address:
            return self.name
        return self._peer_name(address)

    def _peer_name(self, raft_addr: str) -> str:
        for link in self.replica.links.values():
            if raft_address(*link.address) == raft_addr and link.name:
                return link.name
        assert self.raft is not None
        return self.raft.name_of(raft_addr) or raft_addr

    def view(self) -> dict[str, Any]:
        """The body of GET /api/cluster."""
        status = self.raft.status() if self.raft is not None else {}
        leader = self.raft.leader_address() if self.raft is not None else None
        me = raft_address(*self.own)
        members = [{"name": self.name, "address": f"{self.own[0]}:{self.own[1]}", "online": True,
                    "role": "leader" if leader == me else "follower", "lag_s": self.replica.own_lag()}]
        for peer in self.replica.peers():
            host, _, port = peer["address"].rpartition(":")
            addr = raft_address(host, int(port))
            connected = status.get(f"partner_node_status_server_{addr}") == 2
            online = peer["reachable"] or connected
            members.append({"name": peer["name"] or self._peer_name(addr), "address": peer["address"],
                            "online": online, "role": "leader" if leader == addr else
                            ("follower" if online else "unknown"), "lag_s": peer["lag_s"],
                            "error": peer["error"]})
        return {"self": self.name, "leader": self.leader_name(), "term": status.get("raft_term", 0),
                "has_quorum": bool(status.get("has_quorum")), "members": members}

    def close(self) -> None:
        """Leave the Raft group."""
        if self.raft is not None:
            self.raft.close()
