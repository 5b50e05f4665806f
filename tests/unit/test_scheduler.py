"""The node's scheduler keeps APScheduler 3's rules for what a node schedules (tests/unit/test_jobs.py
runs the jobs on both); here its own parts: intervals, a first run now, coalescing, the misfire
grace, max_instances, moving and removing jobs, and the thread that runs them."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest

from actors.node.scheduler import ConflictingIdError, IntervalTrigger, JobLookupError, NodeScheduler

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = T0.timestamp()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def manual(**kw) -> tuple[NodeScheduler, Clock, list]:
    clock, runs = Clock(), []
    sched = NodeScheduler(clock=clock, inline=True, **kw)
    sched.start()
    return sched, clock, runs


def test_an_interval_job_first_runs_one_interval_after_it_was_added_then_every_interval():
    sched, clock, runs = manual()
    sched.add_job(runs.append, "interval", args=["x"], seconds=5, id="x")
    assert sched.get_job("x").next_run_time == T0 + timedelta(seconds=5)
    clock.advance(4.9)
    assert sched.tick() == pytest.approx(0.1) and runs == []
    for _ in range(3):
        clock.advance(5)
        sched.tick()
    assert runs == ["x"] * 3
    assert sched.get_job("x").next_run_time == T0 + timedelta(seconds=20)


def test_next_run_time_now_runs_at_once_and_none_adds_the_job_paused():
    sched, _clock, runs = manual()
    sched.add_job(runs.append, "interval", args=["now"], seconds=60, id="now", next_run_time=T0)
    sched.add_job(runs.append, "interval", args=["paused"], seconds=1, id="paused", next_run_time=None)
    assert sched.tick() == 60
    assert runs == ["now"]
    assert [j.id for j in sched.get_jobs()] == ["now", "paused"]  # paused jobs last


def test_a_late_scheduler_coalesces_missed_runs_into_one_and_keeps_the_grid():
    sched, clock, runs = manual(misfire_grace_time=None)
    sched.add_job(runs.append, "interval", args=["c"], seconds=10, id="c")
    clock.advance(35)  # runs due at 10, 20, 30
    sched.tick()
    assert runs == ["c"]
    assert sched.get_job("c").next_run_time == T0 + timedelta(seconds=40)  # not 35 + 10
    sched.add_job(runs.append, "interval", args=["all"], seconds=10, id="all", coalesce=False)
    clock.advance(30)
    sched.tick()
    assert runs.count("all") == 3


def test_a_run_later_than_its_grace_is_skipped_with_a_warning(caplog):
    sched, clock, runs = manual(misfire_grace_time=30)
    sched.add_job(runs.append, "interval", args=["g"], seconds=3600, id="g")
    clock.advance(3600 + 31)
    sched.tick()
    assert runs == [] and 'Run time of job "g' in caplog.text
    clock.advance(3600 - 31 + 29)
    sched.tick()
    assert runs == ["g"]


def test_a_job_still_running_is_not_started_again():
    sched, clock, runs = manual(max_instances=1)

    def reenter():
        runs.append("outer")
        clock.advance(10)
        sched.tick()  # due again while the first run is in progress

    sched.add_job(reenter, "interval", seconds=10, id="slow", next_run_time=T0)
    sched.tick()
    assert runs == ["outer"]
    clock.advance(10)
    sched.tick()
    assert runs == ["outer", "outer"]


def test_a_run_that_hangs_is_warned_of_once_and_its_return_counted(caplog):
    sched, clock, runs = manual(max_instances=1)
    release = []

    def hang():
        runs.append("run")
        if len(runs) == 1:  # the first run stays in progress while ten more come due
            for _ in range(10):
                clock.advance(2)
                sched.tick()
            release.append(True)

    with caplog.at_level(logging.INFO, logger="actors.node.scheduler"):
        sched.add_job(hang, "interval", seconds=2, id="scan", next_run_time=T0)
        sched.tick()
        assert release and runs == ["run"]
        assert caplog.text.count("skipped: maximum number of running instances") == 1
        clock.advance(2)
        sched.tick()
    assert runs == ["run", "run"]
    assert 'Job "scan' in caplog.text and "starts again after 10 skipped runs" in caplog.text


def test_modify_job_moves_the_next_run_and_remove_job_unschedules():
    sched, clock, runs = manual()
    sched.add_job(runs.append, "interval", args=["p"], seconds=30, id="push")
    sched.modify_job("push", next_run_time=sched.now())
    sched.tick()
    assert runs == ["p"] and sched.get_job("push").next_run_time == T0 + timedelta(seconds=30)
    sched.remove_job("push")
    clock.advance(60)
    assert sched.tick() is None and runs == ["p"]
    with pytest.raises(JobLookupError):
        sched.remove_job("push")
    with pytest.raises(JobLookupError):
        sched.modify_job("push", next_run_time=None)


def test_a_duplicate_id_needs_replace_existing():
    sched, _clock, runs = manual()
    sched.add_job(runs.append, "interval", args=["a"], seconds=1, id="j")
    with pytest.raises(ConflictingIdError):
        sched.add_job(runs.append, "interval", args=["b"], seconds=1, id="j")
    sched.add_job(runs.append, "interval", args=["b"], seconds=1, id="j", replace_existing=True)
    assert sched.get_job("j").args == ("b",)
    with pytest.raises(ValueError):
        sched.add_job(runs.append, "cron", id="c")


def test_a_trigger_object_with_a_time_zone_fires_at_its_local_time():
    from actors.node.jobspec import cron_trigger

    sched, clock, runs = manual(misfire_grace_time=None)
    sched.add_job(runs.append, cron_trigger("0 14 * * *", "Europe/Berlin"), args=["cron"], id="cron")
    assert sched.get_job("cron").next_run_time == T0  # 14:00 in Berlin is 12:00 UTC in June
    sched.tick()
    assert runs == ["cron"]
    assert sched.get_job("cron").next_run_time == T0 + timedelta(days=1)


def test_a_failing_job_is_logged_and_stays_scheduled(caplog):
    sched, clock, _runs = manual()

    def boom():
        raise RuntimeError("no hub")

    sched.add_job(boom, "interval", seconds=1, id="boom", next_run_time=T0)
    sched.tick()
    assert 'Job "boom' in caplog.text and "no hub" in caplog.text
    assert sched.get_job("boom") is not None


def test_interval_trigger_with_jitter_stays_within_it():
    trig = IntervalTrigger(10, start_date=T0, jitter=2)
    for _ in range(50):
        t = trig.get_next_fire_time(T0, T0)
        assert T0 + timedelta(seconds=10) <= t <= T0 + timedelta(seconds=12)


def test_the_thread_runs_due_jobs_and_shutdown_waits_for_the_run_in_progress():
    sched = NodeScheduler(max_workers=2)
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(10)
        finished.set()

    sched.add_job(slow, "interval", seconds=3600, id="slow", next_run_time=sched.now())
    sched.start()
    assert sched.running and started.wait(10)
    assert {t.name for t in threading.enumerate()} >= {"scheduler", "job_0"}
    release.set()
    sched.shutdown(wait=True)
    assert finished.is_set() and not sched.running
    assert "scheduler" not in {t.name for t in threading.enumerate()}
