"""Node agents as real processes (so they can be SIGKILLed), and the checks that prove
no reading was lost or duplicated."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import hub_db, wait_for, write_node_config

ROOT = Path(__file__).resolve().parents[2]


class ProcNode:
    """One `harvester node` process, optionally inside a network namespace."""

    def __init__(self, name: str, config: Path, netns: str | None = None) -> None:
        self.name, self.config, self.netns = name, config, netns
        self.proc: subprocess.Popen | None = None
        self.log = config.with_suffix(".log")

    def start(self) -> ProcNode:
        argv = [sys.executable, "-m", "actors.cli", "--log-level", "INFO", "node", "--config", str(self.config)]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                         start_new_session=True)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                # a node that does not stop within 20 s (say, mid-way through building the plugin
                # sandbox) must not outlive the test, nor keep the others from being stopped
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)
                raise

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


class ProcCluster:
    """Hub and spokes as processes sharing one temporary folder."""

    def __init__(self, tmp: Path, ns_port: int, web_port: int) -> None:
        self.tmp, self.ns_port, self.web_port = tmp, ns_port, web_port
        self.nodes: dict[str, ProcNode] = {}

    def add(self, name: str, role: str = "spoke", netns: str | None = None, **kwargs) -> ProcNode:
        web = self.web_port if role == "hub" else None
        cfg = write_node_config(self.tmp / f"{name}.toml", name, role, self.ns_port, web_port=web, **kwargs)
        node = self.nodes[name] = ProcNode(name, cfg, netns)
        return node.start()

    def state(self, name: str) -> Path:
        return self.tmp / f"state-{name}"

    def hub_db(self) -> sqlite3.Connection:
        return hub_db(self.state('hub') / 'hub.sqlite3')

    def outbox_pending(self, name: str) -> int:
        with sqlite3.connect(f"file:{self.state(name) / 'outbox.sqlite3'}?mode=ro", uri=True, timeout=10) as db:
            return db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]

    def outbox_dropped(self, name: str) -> int:
        with sqlite3.connect(f"file:{self.state(name) / 'outbox.sqlite3'}?mode=ro", uri=True, timeout=10) as db:
            row = db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()
            return row[0] if row else 0

    def hub_last_seq(self, name: str) -> int:
        try:
            with self.hub_db() as db:
                row = db.execute("SELECT last_seq FROM node_seq WHERE node = ?", (name,)).fetchone()
        except sqlite3.OperationalError:
            return 0
        return row[0] if row else 0

    def outbox_seqs(self, name: str) -> tuple[list[int], int]:
        """Pending batch seqs and the last seq the spoke ever assigned."""
        with sqlite3.connect(f"file:{self.state(name) / 'outbox.sqlite3'}?mode=ro", uri=True, timeout=10) as db:
            pending = [r[0] for r in db.execute("SELECT seq FROM batches ORDER BY seq")]
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='batches'").fetchone()
        return pending, row[0] if row else 0

    def wait_drained(self, *spokes: str, timeout: float = 60) -> None:
        """Wait until the hub holds every batch each spoke had produced when this was called
        (spokes keep polling, so their outboxes are never empty for long)."""
        targets = {s: self.outbox_seqs(s)[1] for s in spokes}
        wait_for(lambda: all(self.hub_last_seq(s) >= t for s, t in targets.items()), timeout=timeout,
                 interval=0.5, what=f"the hub to catch up with {targets}")

    def stop(self) -> None:
        failures = []
        for node in reversed(list(self.nodes.values())):
            try:
                node.stop()
            except subprocess.TimeoutExpired as exc:
                failures.append(exc)
        if failures:
            raise failures[0]


def assert_exactly_once(cluster: ProcCluster, spoke: str) -> dict[str, int]:
    """Every batch the spoke produced is stored once at the hub (seqs 1..N without a gap, no
    reading twice) or still waits in the spoke's outbox (seqs after N)."""
    assert cluster.outbox_dropped(spoke) == 0, f"{spoke} dropped batches on overflow"
    pending, _ = cluster.outbox_seqs(spoke)
    with cluster.hub_db() as db:
        # a batch carries readings, or only alert events (a quarantine, an acknowledge between polls)
        seqs = [r[0] for r in db.execute("SELECT seq FROM readings WHERE node=? UNION "
                                         "SELECT seq FROM alert_events WHERE raised_by=? AND seq IS NOT NULL "
                                         "ORDER BY seq", (spoke, spoke))]
        twice = db.execute("SELECT plugin, alert, state, ts, COUNT(*) FROM alert_events WHERE raised_by=? "
                           "GROUP BY plugin, alert, state, ts HAVING COUNT(*) > 1", (spoke,)).fetchall()
        last = db.execute("SELECT last_seq FROM node_seq WHERE node=?", (spoke,)).fetchone()[0]
        dupes = db.execute("SELECT sensor, quantity, ts, COUNT(*) FROM readings WHERE node=? "
                           "GROUP BY sensor, quantity, ts HAVING COUNT(*) > 1", (spoke,)).fetchall()
        per_seq = dict(db.execute("SELECT seq, COUNT(*) FROM readings WHERE node=? GROUP BY seq", (spoke,)))
    assert seqs == list(range(1, last + 1)), f"{spoke}: missing batches {sorted(set(range(1, last + 1)) - set(seqs))}"
    assert not dupes, f"{spoke}: duplicated readings {dupes[:5]}"
    assert not twice, f"{spoke}: duplicated alert events {twice[:5]}"
    assert all(p > last for p in pending), f"{spoke}: outbox holds batches the hub already acknowledged"
    assert pending == list(range(last + 1, last + 1 + len(pending))), f"{spoke}: gap in the outbox {pending[:10]}"
    return per_seq


def readings_between(cluster: ProcCluster, spoke: str, sensor: str, quantity: str, t0: float, t1: float) -> int:
    with cluster.hub_db() as db:
        return db.execute("SELECT COUNT(*) FROM readings WHERE node=? AND sensor=? AND quantity=? AND ts>=? AND ts<?",
                          (spoke, sensor, quantity, t0, t1)).fetchone()[0]


@pytest.fixture
def proc_cluster(tmp_path) -> Iterator[ProcCluster]:
    from tests.helpers import free_port

    c = ProcCluster(tmp_path, free_port(), free_port())
    try:
        yield c
    finally:
        c.stop()


def fill_disk(path: Path) -> None:
    """Write zeros to `path` until its file system is full, to the last block."""
    try:
        # unbuffered: a buffered file would try its last partial block again at close, and fail there
        f = open(path, "wb", buffering=0)  # noqa: SIM115 (closed below; the open itself may find it full)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            return  # the node filled it already
        raise
    with f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass


def have_root_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None
