"""Several hubs: the small control state they agree on through Raft, with pysyncobj.

Only hubs of a cluster import this module (one hub never does, spokes never do). What goes
through Raft is what an operator or a schedule decides once for the whole fleet:

- alert acknowledgements (an alert acknowledged on one hub is acknowledged on all);
- the runs of singleton jobs (the daily summary), with what they produced, so a job runs
  on the leader only and once per slot, also across a fail-over;
- which hub is which (Raft address -> hub name), for the cluster view;
- which batches each export target has sent to its engine, so the hub that leads after a
  fail-over goes on from there (actors.hub.export);
- which notification messages were delivered, so the next leader does not send them again
  (actors.hub.notify).

Readings do not: a batch (node, seq) never changes, so hubs copy them from each other
(actors.hub.replica) and a hub without a majority keeps taking them.

pysyncobj's wire format is pickle. Every hub is given the cluster secret (`password`: Fernet
encryption and authentication of every message, checked before anything is unpickled) and
binds its own address only. Its journal is written through an mmap that is never fsynced: a
killed process loses nothing, a power cut may lose the journal's tail on that hub, which
the other hubs then send again. What a control write changes on a hub (an acknowledged
alert, a summary) is also written to that hub's SQLite store with synchronous=FULL, and
never undone from there: a power cut of every hub at once cannot take back an
acknowledgement a hub has applied, nor make a job it recorded run twice."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, SyncObjException, replicated
from pysyncobj.transport import TCPTransport

from actors.errors import NoMajority
from actors.hub.holdings import SeqSet

log = logging.getLogger(__name__)
WRITE_TIMEOUT_S = 3.0  # a control write that no majority commits in this time fails
LEADER_FALLBACK_S = 3.0  # a leader cut off from the majority steps down after this
MAX_ACKS = 5000  # acknowledgements kept in the replicated state (oldest dropped; stores keep theirs)
MAX_NOTIFIED = 20_000  # notification keys remembered per channel in the replicated state
MAX_RUNS_PER_JOB = 400  # singleton runs remembered per job (a daily job: more than a year)

Applied = Callable[[str, tuple[Any, ...]], None]


def raft_address(host: str, nameserver_port: int) -> str:
    """Where a hub's Raft listens: its own address, on the port after its name server's."""
    return f"{host}:{nameserver_port + 1}"


class ControlState(SyncObjConsumer):
    """The replicated state. Each method runs on every hub, in the same order, once committed."""

    def __init__(self, applied: Applied) -> None:
        self._applied = applied  # set before SyncObjConsumer.__init__: not part of the replicated state
        super().__init__()
        self.acks: dict[str, tuple[str, float]] = {}
        self.runs: dict[str, dict[str, tuple[str, float, str]]] = {}
        self.names: dict[str, str] = {}
        self.exports: dict[str, dict[str, SeqSet]] = {}
        self.notified: dict[str, dict[str, bool]] = {}  # channel -> message keys sent (insertion order)

    @replicated
    def acknowledge(self, key: str, by: str, ts: float) -> bool:
        """Acknowledge the alert episode `key`; False when it already was."""
        if key in self.acks:
            return False
        self.acks[key] = (by, ts)
        if len(self.acks) > MAX_ACKS:
            for old in sorted(self.acks, key=lambda k: self.acks[k][1])[:len(self.acks) - MAX_ACKS]:
                del self.acks[old]
        self._applied("ack", (key, by, ts))
        return True

    @replicated
    def record_run(self, job: str, key: str, hub: str, ran: float, result: str, output: Any) -> bool:
        """Record the run of a singleton job for slot `key`; False (and nothing applied) when
        some hub already ran that slot."""
        runs = self.runs.setdefault(job, {})
        if key in runs:
            return False
        runs[key] = (hub, ran, result)
        if len(runs) > MAX_RUNS_PER_JOB:
            for old in sorted(runs)[:len(runs) - MAX_RUNS_PER_JOB]:
                del runs[old]
        self._applied("run", (job, key, hub, ran, result, output))
        return True

    @replicated
    def exported(self, target: str, intervals: list[tuple[str, int, int]]) -> None:
        """Export `target` sent the batches (node, lo..hi) to its engine."""
        nodes = self.exports.setdefault(target, {})
        for node, lo, hi in intervals:
            # a new set replaces the old one in one step: exporter threads read these unlocked
            held = SeqSet(nodes[node].intervals() if node in nodes else ())
            held.add_range(lo, hi)
            nodes[node] = held

    @replicated
    def sent(self, channel: str, keys: list[str]) -> None:
        """Notification channel `channel` delivered these messages (the oldest keys beyond
        MAX_NOTIFIED are forgotten: by then their alerts are long over)."""
        held = dict(self.notified.get(channel, {}))
        held.update(dict.fromkeys(keys, True))
        if len(held) > MAX_NOTIFIED:
            held = dict(list(held.items())[len(held) - MAX_NOTIFIED:])
        self.notified[channel] = held  # replaced whole: notifier threads read it unlocked

    @replicated
    def introduce(self, address: str, name: str) -> None:
        """The hub at Raft `address` is called `name`."""
        self.names[address] = name


class _Transport(TCPTransport):
    """pysyncobj's TCP transport, which also says when a connection is refused for not
    proving the cluster secret (pysyncobj closes those silently)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._proven: set[Any] = set()
        self._refusals: dict[str, float] = {}
        super().__init__(*args, **kwargs)

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:  # noqa: N802 (pysyncobj's name)
        self._proven.add(conn)  # only a message that decrypted (and then unpickled) gets here
        super()._onIncomingMessageReceived(conn, message)

    def _onDisconnected(self, conn: Any) -> None:  # noqa: N802
        if conn in self._unknownConnections and conn not in self._proven:
            try:
                peer = conn._TcpConnection__socket.getpeername()[0]
            except (AttributeError, OSError):
                peer = "an unknown address"
            now = time.monotonic()
            if now - self._refusals.get(peer, -60.0) >= 60.0:  # one line a minute per address
                self._refusals[peer] = now
                log.warning("refused a Raft connection from %s: it did not prove the cluster secret "
                            "(nothing it sent was unpickled)", peer)
        self._proven.discard(conn)
        super()._onDisconnected(conn)


class RaftCluster:
    """This hub's member of the Raft group, and the control writes it offers."""

    def __init__(self, name: str, address: str, partners: list[str], state_dir: Path, secret: str,
                 applied: Applied) -> None:
        self.name = name
        self.address = address
        self.partners = partners
        state_dir.mkdir(parents=True, exist_ok=True)
        conf = SyncObjConf(
            password=secret,
            bindAddress=address,  # never 0.0.0.0: the wire format is pickle
            journalFile=str(state_dir / "raft.journal"),
            fullDumpFile=str(state_dir / "raft.dump"),
            leaderFallbackTimeout=LEADER_FALLBACK_S,
            appendEntriesUseBatch=False,  # an acknowledgement commits in ms, not at the next batch
            commandsWaitLeader=False,  # without a leader a write fails now, with a reason
            useFork=False,  # fork() in a threaded process is unsafe (and warned about from 3.12)
            dynamicMembershipChange=False,
            connectionRetryTime=1.0,
        )
        self.state = ControlState(applied)
        self._obj = SyncObj(address, partners, conf, consumers=[self.state], transportClass=_Transport)

    # -- reading the group ----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """pysyncobj's status: leader, term, which partners are connected."""
        return self._obj.getStatus()

    def leader_address(self) -> str | None:
        """The Raft address of the hub this one takes for the leader (None during an election)."""
        leader = self._obj._getLeader()
        return None if leader is None else getattr(leader, "address", str(leader))

    def is_leader(self) -> bool:
        """True when this hub leads (and so runs the singleton jobs)."""
        return self.leader_address() == self.address and self.status().get("has_quorum", False)

    def name_of(self, address: str) -> str | None:
        """The hub name a Raft address introduced itself with."""
        return self.state.names.get(address)

    def acks(self) -> dict[str, tuple[str, float]]:
        """Every acknowledgement in the replicated state."""
        return dict(self.state.acks)

    def was_exported(self, target: str, node: str, seq: int) -> bool:
        """True when batch (node, seq) went to export `target`'s engine (from any hub)."""
        held = self.state.exports.get(target, {}).get(node)
        return held is not None and seq in held

    def mark_exported(self, target: str, pairs: list[tuple[str, int]]) -> None:
        """Record batches an export sent; asynchronous: if it is lost, a later leader sends them again,
        which the engine takes as the same points."""
        intervals: list[tuple[str, int, int]] = []
        for node, seq in sorted(pairs):
            if intervals and intervals[-1][0] == node and intervals[-1][2] == seq - 1:
                intervals[-1] = (node, intervals[-1][1], seq)
            else:
                intervals.append((node, seq, seq))
        try:
            self.state.exported(target, intervals)
        except SyncObjException as exc:
            log.debug("export %s: progress not recorded in the cluster (%s); a later leader resends it",
                      target, _reason(exc))

    def was_notified(self, channel: str, key: str) -> bool:
        """True when some hub's channel delivered the message `key`."""
        return key in self.state.notified.get(channel, {})

    def mark_notified(self, channel: str, keys: list[str]) -> None:
        """Record delivered messages, asynchronously (if lost, a later leader may send them again)."""
        try:
            self.state.sent(channel, keys)
        except SyncObjException as exc:
            log.debug("notify %s: delivery not recorded in the cluster (%s)", channel, _reason(exc))

    def has_run(self, job: str, key: str) -> bool:
        """True when some hub recorded a run of `job` for slot `key`."""
        return key in self.state.runs.get(job, {})

    # -- writing --------------------------------------------------------------------------
    def _write(self, what: str, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args, sync=True, timeout=WRITE_TIMEOUT_S)
        except SyncObjException as exc:
            total = len(self.partners) + 1
            raise NoMajority(f"{what} needs {total // 2 + 1} of the {total} hubs to agree and they did not "
                             f"within {WRITE_TIMEOUT_S:.0f} s ({_reason(exc)}), so it is not done (it may still take "
                             "effect if the hubs agree later); readings keep landing; try again when more "
                             "hubs are up") from None

    def acknowledge(self, key: str, by: str, ts: float) -> bool:
        """Acknowledge an alert episode on every hub; NoMajority when the cluster cannot agree."""
        return bool(self._write("acknowledging an alert", self.state.acknowledge, key, by, ts))

    def record_run(self, job: str, key: str, result: str, output: Any) -> bool:
        """Record a singleton job's run (True) unless another hub already did (False)."""
        return bool(self._write(f"recording the run of {job}", self.state.record_run, job, key, self.name,
                                time.time(), result, output))

    def introduce(self) -> None:
        """Tell the cluster this hub's name, once it is known to be missing or different."""
        if self.state.names.get(self.address) != self.name:
            self.state.introduce(self.address, self.name)  # asynchronous; retried at the next call

    def close(self) -> None:
        """Leave the group: stop its thread and close its sockets and journal."""
        self._obj.destroy()


def _reason(exc: SyncObjException) -> str:
    code = exc.errorCode
    return {"Timeout": "no majority answered", FAIL_REASON.MISSING_LEADER: "no leader",
            FAIL_REASON.NOT_LEADER: "the leader changed", FAIL_REASON.LEADER_CHANGED: "the leader changed",
            FAIL_REASON.QUEUE_FULL: "the queue is full",
            FAIL_REASON.DISCARDED: "discarded by a new leader"}.get(code, f"pysyncobj: {code}")
