"""wait_healthy's decisions with a scripted probe and a fake clock: no sockets, no sleeping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from actors.cli.health import HealthProbe, Verdict, pid_alive, wait_healthy
from tests.helpers import wait_for


class ScriptedProbe(HealthProbe):
    """A probe that answers from a list instead of asking a hub (the last answer repeats)."""

    def __init__(self, answers: list[Verdict], node: str = "pi4", agent_only: bool = False) -> None:
        self.node, self.agent_only, self.answers = node, agent_only, answers
        self.asked: list[float | None] = []

    def check(self, seen_after: float | None = None) -> Verdict:
        self.asked.append(seen_after)
        return self.answers[min(len(self.asked) - 1, len(self.answers) - 1)]


class FakeClock:
    """monotonic() and sleep() that only move when slept."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def online(last_seen: float, role: str = "spoke") -> Verdict:
    return Verdict(True, "online", True, role, "1.0", last_seen)


def test_wait_healthy_ignores_an_online_flag_left_by_the_replaced_process():
    clock = FakeClock()
    probe = ScriptedProbe([Verdict(False, "not registered"), online(100.0), online(101.0)])
    verdict = wait_healthy(probe, timeout=30, interval=0.5, clock=clock, sleep=clock.sleep)
    assert verdict.healthy and verdict.last_seen == 101.0
    # the first "online" only set the baseline: the next check must see the hub hear from *this* agent
    assert probe.asked == [None, None, 100.0]


def test_wait_healthy_accepts_the_hub_without_waiting_for_a_push():
    clock = FakeClock()
    probe = ScriptedProbe([online(100.0, role="hub")], node="hub")
    assert wait_healthy(probe, timeout=30, clock=clock, sleep=clock.sleep).healthy
    assert clock.now == 0.0


def test_wait_healthy_times_out_with_the_last_reason():
    clock = FakeClock()
    progress: list[str] = []
    probe = ScriptedProbe([Verdict(False, "agent answers with version 1.0, expected 2.0")])
    verdict = wait_healthy(probe, timeout=5, interval=0.5, progress=progress.append, clock=clock, sleep=clock.sleep)
    assert not verdict.healthy
    assert verdict.reason == "not healthy after 5 s: agent answers with version 1.0, expected 2.0"
    assert progress == ["agent answers with version 1.0, expected 2.0"]  # said once, not every poll
    assert 5.0 <= clock.now < 6.0


def test_wait_healthy_fails_at_once_when_the_watched_agent_exits():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    clock = FakeClock()
    probe = ScriptedProbe([Verdict(False, "not registered")])
    verdict = wait_healthy(probe, timeout=60, watch_pid=proc.pid, clock=clock, sleep=clock.sleep)
    assert not verdict.healthy and f"(pid {proc.pid}) exited" in verdict.reason
    assert clock.now == 0.0 and probe.asked == []


def test_pid_alive_sees_a_zombie_as_dead():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        assert pid_alive(os.getpid())
        # exited but not reaped yet: a zombie, which kill(pid, 0) alone would call alive
        wait_for(lambda: Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
                 timeout=10, what="the child to become a zombie")
        assert not pid_alive(proc.pid)
    finally:
        proc.wait()
    assert not pid_alive(proc.pid)
