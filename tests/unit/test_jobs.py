"""Scheduled jobs on a real APScheduler, driven by an injected clock (nothing sleeps)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.base import BaseScheduler

from actors.node.config import ConfigError, parse_config
from actors.node.jobs import JobContext, JobRunner
from actors.node.jobspec import JobSpec
from actors.node.scheduler import NodeScheduler

BERLIN = ZoneInfo("Europe/Berlin")


class Clock:
    """Wall time for APScheduler and for the runner, moved by the test."""

    def __init__(self, when: datetime) -> None:
        self.t = when.timestamp()
        self.scheduler = "node"

    def __call__(self) -> float:
        return self.t

    def set(self, when: datetime) -> None:
        self.t = when.timestamp()


class ManualScheduler(BaseScheduler):
    """APScheduler's own job processing, run when the test says, not from a thread."""

    def wakeup(self) -> None:
        """Nothing to wake: the test calls tick()."""

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)

    def tick(self) -> None:
        self._process_jobs()


@pytest.fixture(params=["node", "apscheduler"])
def clock(monkeypatch, request):
    """The clock, and which scheduler runner_for() builds: the node's own, or APScheduler's (the rules it keeps)."""
    c = Clock(datetime(2026, 6, 1, 11, 0, tzinfo=BERLIN))
    c.scheduler = request.param

    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.fromtimestamp(c.t, tz or UTC)

    import apscheduler.executors.base as executors_base
    import apscheduler.schedulers.base as schedulers_base

    monkeypatch.setattr(schedulers_base, "datetime", FakeDatetime)
    monkeypatch.setattr(executors_base, "datetime", FakeDatetime)
    return c


class Calls:
    """A fake actor layer recording every call; `fail` makes a target raise."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, tuple]] = []
        self.fail: dict[str, Exception] = {}

    def __call__(self, name: str, method: str, args: tuple, kwargs: dict, timeout: float):
        if name in self.fail:
            raise self.fail[name]
        self.log.append((name, method, tuple(args)))
        return {"ok": True}


def runner_for(specs: list[JobSpec], clock: Clock, calls: Calls) -> tuple[JobRunner, ManualScheduler | NodeScheduler]:
    if clock.scheduler == "node":
        sched = NodeScheduler(clock=clock, inline=True, misfire_grace_time=None)
    else:
        sched = ManualScheduler(timezone="UTC", executors={"default": DebugExecutor()})
    runner = JobRunner(specs, sched, JobContext("pi4", calls, local_buzzer="harvester.pi4.buzzer"), clock)
    runner.install()
    sched.start()
    return runner, sched


def at(clock: Clock, sched: ManualScheduler, when: datetime) -> None:
    clock.set(when)
    sched.tick()


def test_jobs_cron_fires_at_the_local_time_it_names(clock):
    calls = Calls()
    spec = JobSpec("noon", "call", cron="0 12 * * *", timezone="Europe/Berlin", call="harvester.pi4.dht22.read")
    runner, sched = runner_for([spec], clock, calls)
    at(clock, sched, datetime(2026, 6, 1, 11, 59, 59, tzinfo=BERLIN))
    assert calls.log == []
    at(clock, sched, datetime(2026, 6, 1, 12, 0, 1, tzinfo=BERLIN))
    assert calls.log == [("harvester.pi4.dht22", "read", ())]
    at(clock, sched, datetime(2026, 6, 1, 12, 30, tzinfo=BERLIN))
    assert len(calls.log) == 1
    record = runner.describe("noon")
    assert record["runs"] == 1 and record["last_error"] is None and "ok" in record["last_result"]
    assert record["next_run"] == datetime(2026, 6, 2, 12, 0, tzinfo=BERLIN).timestamp()


def test_jobs_interval_trigger_repeats(clock):
    calls = Calls()
    spec = JobSpec("pulse", "call", interval=60.0, call="harvester.pi4.leds.clear")
    _, sched = runner_for([spec], clock, calls)
    start = datetime.fromtimestamp(clock.t, BERLIN)
    for minute in range(1, 4):
        at(clock, sched, start.replace(minute=minute, second=1))
    assert [c[1] for c in calls.log] == ["clear"] * 3


@pytest.mark.parametrize("grace, runs", [(3600.0, 1), (60.0, 0)])
def test_jobs_power_off_through_run_times_follows_the_misfire_policy(clock, grace, runs):
    calls = Calls()
    spec = JobSpec("noon", "call", cron="0 12 * * *", timezone="Europe/Berlin", misfire_grace=grace,
                   call="harvester.pi4.dht22.read")
    runner, sched = runner_for([spec], clock, calls)
    # the board was off from 11:00 on day 1 until 12:30 on day 3: two noons missed
    at(clock, sched, datetime(2026, 6, 3, 12, 30, tzinfo=BERLIN))
    assert len(calls.log) == runs  # coalesced into one run, or skipped past the grace; never a burst
    assert runner.describe("noon")["next_run"] == datetime(2026, 6, 4, 12, 0, tzinfo=BERLIN).timestamp()


def test_jobs_quiet_hours_mute_and_unmute_the_buzzer(clock):
    calls = Calls()
    spec = JobSpec("night", "quiet_hours", timezone="Europe/Berlin", start="22:00", end="07:00")
    runner, sched = runner_for([spec], clock, calls)
    runner.apply_quiet_hours_now()  # 11:00: outside the window
    assert calls.log == [("harvester.pi4.buzzer", "mute", (False,))]
    at(clock, sched, datetime(2026, 6, 1, 22, 0, 5, tzinfo=BERLIN))
    at(clock, sched, datetime(2026, 6, 2, 3, 0, tzinfo=BERLIN))
    at(clock, sched, datetime(2026, 6, 2, 7, 0, 5, tzinfo=BERLIN))
    assert calls.log[1:] == [("harvester.pi4.buzzer", "mute", (True,)), ("harvester.pi4.buzzer", "mute", (False,))]
    clock.set(datetime(2026, 6, 2, 23, 30, tzinfo=BERLIN))
    runner.apply_quiet_hours_now()  # a board booting inside the window mutes at once
    assert calls.log[-1] == ("harvester.pi4.buzzer", "mute", (True,))


@pytest.mark.parametrize("hhmm, inside", [("21:59", False), ("22:00", True), ("23:59", True), ("00:00", True),
                                          ("06:59", True), ("07:00", False), ("12:00", False)])
def test_jobs_quiet_window_spans_midnight(hhmm, inside):
    spec = JobSpec("night", "quiet_hours", timezone="Europe/Berlin", start="22:00", end="07:00")
    h, m = map(int, hhmm.split(":"))
    assert JobRunner.in_window(spec, datetime(2026, 1, 5, h, m, tzinfo=BERLIN).timestamp()) is inside


def test_jobs_failing_job_records_its_error_and_others_keep_running(clock):
    calls = Calls()
    calls.fail["harvester.pi4.leds"] = TimeoutError("harvester.pi4.leds.clear did not answer within 2.0s")
    specs = [JobSpec("bad", "call", interval=60.0, call="harvester.pi4.leds.clear"),
             JobSpec("good", "call", interval=60.0, call="harvester.pi4.dht22.read")]
    runner, sched = runner_for(specs, clock, calls)
    start = datetime.fromtimestamp(clock.t, BERLIN)
    at(clock, sched, start.replace(minute=1, second=1))
    at(clock, sched, start.replace(minute=2, second=1))
    bad, good = runner.describe("bad"), runner.describe("good")
    assert bad["failures"] == 2 and "did not answer within 2.0s" in bad["last_error"]
    assert good["runs"] == 2 and good["last_error"] is None


def test_jobs_config_errors_name_the_job_and_field():
    base = {"node": {"name": "pi4", "role": "spoke", "state_dir": "/tmp/x"}, "hub": {"host": "127.0.0.1"}}
    cases = [
        ({"name": "noon", "cron": "61 12 * * *", "call": "harvester.pi4.dht22.read"},
         "jobs[0] (noon).cron", "bad cron expression '61 12 * * *'"),
        ({"name": "noon", "cron": "0 12 * * *", "timezone": "Mars/Olympus", "call": "harvester.pi4.dht22.read"},
         "jobs[0] (noon).timezone", "unknown time zone"),
        ({"name": "night", "kind": "quiet_hours", "start": "22:00"}, "jobs[0] (night).end", "HH:MM"),
        ({"name": "sum", "kind": "daily_summary"}, "jobs[0] (sum).kind", "runs on the hub only"),
        ({"name": "x", "interval": 60, "call": "pi4.dht22"}, "jobs[0] (x).call", "harvester.<node>.<actor>.<method>"),
        ({"name": "x", "interval": 60, "cron": "* * * * *", "call": "harvester.a.b.c"}, "jobs[0] (x).cron",
         "exactly one of cron"),
    ]
    for row, key, message in cases:
        with pytest.raises(ConfigError) as info:
            parse_config({**base, "jobs": [row]}, "pi4.toml")
        assert any(k == key and message in m for k, m in info.value.problems), (row, info.value.problems)


def test_jobs_daily_summary_stores_yesterday_per_sensor(clock, tmp_path):
    from actors.hub.state import Hub
    from actors.hub.store import Store

    hub = Hub(Store(tmp_path / "hub.sqlite3"), clock)
    day1 = datetime(2026, 6, 1, 10, 0, tzinfo=BERLIN).timestamp()
    readings = [{"sensor": "dht22", "quantity": "temperature", "value": v, "unit": "°C", "ts": day1 + i * 3600}
                for i, v in enumerate([18.0, 22.0, 26.0])]
    clock.set(datetime(2026, 6, 1, 13, 0, tzinfo=BERLIN))
    hub.push([{"node": "pi4", "seq": 1, "readings": readings, "alerts": [
        {"plugin": "room", "version": "1", "alert": "room.hot", "state": "raised", "severity": "warning",
         "message": "hot", "node": "pi4", "sensor": "dht22", "quantity": "temperature", "value": 26.0,
         "ts": day1 + 7200}]}])
    spec = JobSpec("daily-summary", "daily_summary", cron="5 0 * * *", timezone="Europe/Berlin")
    runner, sched = runner_for([spec], clock, Calls())
    runner.ctx.hub = hub
    at(clock, sched, datetime(2026, 6, 2, 0, 5, 30, tzinfo=BERLIN))
    assert runner.describe("daily-summary")["last_result"] == "1 series summarised for 2026-06-01"
    [row] = hub.store.summaries("2026-06-01")
    assert (row["min"], row["mean"], row["max"], row["n"], row["alerts"]) == (18.0, 22.0, 26.0, 3, 1)
