"""Scheduled jobs: operator-configured jobs on the node's scheduler that call actors or run built-ins,
with their last run, result, error and duration kept for `harvester jobs ls`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from Pyro5 import errors as pyro_errors

from actors.base import Actor, Str, remote
from actors.errors import BadRequest
from actors.node.jobspec import JobSpec, quiet_cron, zone

if TYPE_CHECKING:
    from actors.node.scheduler import NodeScheduler

log = logging.getLogger(__name__)
RESULT_CHARS = 200
# With several hubs these kinds run on the leader only, once per slot (actors.hub.group)
SINGLETON_KINDS = ("daily_summary",)
CATCH_UP_EVERY_S = 10.0
CATCH_UP_WINDOW_S = 6 * 3600  # a slot missed longer ago than this (every hub down) is not run late


@dataclass
class JobRecord:
    """What `jobs ls` shows about one job."""

    last_run: float | None = None
    last_result: str | None = None
    last_error: str | None = None
    duration_ms: float | None = None
    runs: int = 0
    failures: int = 0


class JobContext:
    """What jobs reach: remote actors (with timeouts, no retries for commands), the hub."""

    def __init__(self, node: str, call_actor: Callable[[str, str, tuple, dict, float], Any],
                 hub: Any = None, local_buzzer: str | None = None) -> None:
        self.node = node
        self.call_actor = call_actor
        self.hub = hub
        self.local_buzzer = local_buzzer


class JobRunner:
    """Adds each JobSpec to the node's scheduler (or any with APScheduler's add_job) and records every run."""

    def __init__(self, specs: list[JobSpec], scheduler: NodeScheduler, ctx: JobContext,
                 clock: Callable[[], float] = time.time) -> None:
        self.specs = {s.name: s for s in specs}
        self.scheduler = scheduler
        self.ctx = ctx
        self.clock = clock
        self.records = {s.name: JobRecord() for s in specs}
        self._lock = threading.Lock()

    # -- scheduling -----------------------------------------------------------------------
    def install(self) -> None:
        """Add every enabled job; quiet hours are also applied at once (the board may have
        been off when the window opened)."""
        for spec in self.specs.values():
            if not spec.enabled:
                continue
            common = {"coalesce": True, "max_instances": 1, "misfire_grace_time": int(spec.misfire_grace),
                      "replace_existing": True}
            if spec.kind == "quiet_hours":
                for edge, hhmm, mute in (("start", spec.start, True), ("end", spec.end, False)):
                    trigger = spec.cron_trigger(quiet_cron(hhmm))
                    self.scheduler.add_job(self.run, trigger, args=[spec.name, mute], id=f"job:{spec.name}:{edge}",
                                           **common)
                continue
            if spec.cron:
                trigger = spec.cron_trigger()
                if spec.jitter:
                    trigger.jitter = int(spec.jitter)
                self.scheduler.add_job(self.run, trigger, args=[spec.name], id=f"job:{spec.name}", **common)
                continue
            # An interval's runs are instants: its time zone changes nothing. start_date comes from
            # our clock, not the trigger's own datetime.now(): tests inject time.
            self.scheduler.add_job(self.run, "interval", args=[spec.name], id=f"job:{spec.name}",
                                   seconds=spec.interval, jitter=int(spec.jitter) or None,
                                   start_date=datetime.fromtimestamp(self.clock() + (spec.interval or 0), UTC),
                                   **common)
        if getattr(self.ctx.hub, "cluster", None) is not None:
            self.scheduler.add_job(self.catch_up, "interval", seconds=CATCH_UP_EVERY_S, id="jobs:catch-up")

    def catch_up(self) -> list[str]:
        """On the leader of several hubs: run each singleton job whose last slot no hub ran (its
        leader died at the scheduled time, or before it); returns the jobs run."""
        group = self.ctx.hub.cluster
        if not group.leads():
            return []
        now, ran = self.clock(), []
        for spec in self.specs.values():
            if not spec.enabled or spec.kind not in SINGLETON_KINDS:
                continue
            fired = self._last_fire(spec, now)
            if fired is not None and group.ran(spec.name, self._previous_day(spec, fired)[2]) is None:
                log.info("job %s: no hub ran its %s slot; running it now", spec.name,
                         datetime.fromtimestamp(fired, zone(spec.timezone)).isoformat())
                self.run(spec.name, fired)
                ran.append(spec.name)
        return ran

    def _last_fire(self, spec: JobSpec, now: float) -> float | None:
        """The job's latest scheduled time in the last CATCH_UP_WINDOW_S, or None."""
        tz = zone(spec.timezone)
        trigger = spec.cron_trigger() if spec.cron else None
        if trigger is None:
            return None
        last, t = None, trigger.get_next_fire_time(None, datetime.fromtimestamp(now - CATCH_UP_WINDOW_S, tz))
        while t is not None and t.timestamp() <= now:
            last = t.timestamp()
            t = trigger.get_next_fire_time(t, t + timedelta(seconds=1))
        return last

    def apply_quiet_hours_now(self) -> None:
        """Set every quiet-hours target to the state the current time calls for."""
        for spec in self.specs.values():
            if spec.enabled and spec.kind == "quiet_hours":
                self.run(spec.name, self.in_window(spec, self.clock()))

    @staticmethod
    def in_window(spec: JobSpec, now: float) -> bool:
        """True when `now` lies in the quiet window (which may span midnight)."""
        local = datetime.fromtimestamp(now, zone(spec.timezone))
        minutes = local.hour * 60 + local.minute
        start = int(spec.start[:2]) * 60 + int(spec.start[3:])  # type: ignore[index]
        end = int(spec.end[:2]) * 60 + int(spec.end[3:])  # type: ignore[index]
        return start <= minutes < end if start < end else minutes >= start or minutes < end

    # -- running --------------------------------------------------------------------------
    def run(self, name: str, *extra: Any) -> dict[str, Any]:
        """Run a job now and record the outcome; never raises (the scheduler keeps going)."""
        spec = self.specs.get(name)
        if spec is None:
            raise BadRequest(f"no job named {name!r}; jobs: {', '.join(sorted(self.specs)) or 'none'}")
        t0, started = time.perf_counter(), self.clock()
        try:
            result = self._execute(spec, *extra)
        except Exception as exc:  # recorded and logged; a failing job must not stop the scheduler
            error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                rec = self.records[name]
                rec.last_run, rec.last_error, rec.runs, rec.failures = started, error, rec.runs + 1, rec.failures + 1
                rec.duration_ms = round(1000 * (time.perf_counter() - t0), 1)
            log.warning("job %s failed: %s", name, error)
        else:
            with self._lock:
                rec = self.records[name]
                rec.last_run, rec.last_error, rec.runs = started, None, rec.runs + 1
                rec.last_result = _short(result)
                rec.duration_ms = round(1000 * (time.perf_counter() - t0), 1)
        return self.describe(name)

    def _execute(self, spec: JobSpec, *extra: Any) -> Any:
        ctx = self.ctx
        if spec.kind == "call":
            target, _, method = spec.call.rpartition(".")  # type: ignore[union-attr]
            return ctx.call_actor(target, method, spec.args, spec.kwargs, spec.timeout)
        if spec.kind == "quiet_hours":
            mute = extra[0] if extra else self.in_window(spec, self.clock())
            targets = spec.targets or ((ctx.local_buzzer,) if ctx.local_buzzer else ())
            if not targets:
                raise BadRequest("quiet_hours has no buzzer to mute: set targets")
            for target in targets:
                ctx.call_actor(target, "mute", (mute,), {}, spec.timeout)
            return f"{'muted' if mute else 'unmuted'} {', '.join(targets)}"
        hub = ctx.hub
        if hub is None:
            raise BadRequest(f"{spec.kind} runs on the hub only")
        if spec.kind == "rollup":
            return f"{hub.store.rollup()} buckets"
        if spec.kind == "retention":
            keep = spec.kwargs
            return hub.store.retain(float(keep.get("raw_days", 30)), float(keep.get("rollup_days", 400)))
        if spec.kind == "daily_summary":
            start, end, day = self._previous_day(spec, extra[0] if extra else None)
            if getattr(hub, "cluster", None) is None:
                return f"{hub.store.daily_summary(start, end, day)} series summarised for {day}"

            def summarise() -> tuple[str, Any]:
                rows = hub.store.summary_rows(start, end, day)
                return f"{len(rows)} series summarised for {day} by {ctx.node}", {"daily_summary": rows}

            return hub.cluster.run_singleton(spec.name, day, summarise)
        raise BadRequest(f"unknown job kind {spec.kind}")

    def _previous_day(self, spec: JobSpec, at: float | None = None) -> tuple[float, float, str]:
        """Start and end (epoch) and label of the day before `at` (default: now) in the job's time zone."""
        tz = zone(spec.timezone)
        today = datetime.fromtimestamp(self.clock() if at is None else at, tz).replace(hour=0, minute=0, second=0, microsecond=0)
        yesterday = (today - timedelta(days=1)).replace(tzinfo=tz)
        return yesterday.timestamp(), today.timestamp(), yesterday.date().isoformat()

    # -- reporting ------------------------------------------------------------------------
    def next_run(self, name: str) -> float | None:
        """The next fire time (epoch), over all of the job's scheduler entries."""
        times = []
        for job in self.scheduler.get_jobs():
            if job.id == f"job:{name}" or job.id.startswith(f"job:{name}:"):
                nrt = getattr(job, "next_run_time", None)
                if nrt is not None:
                    times.append(nrt.timestamp())
        return min(times) if times else None

    def describe(self, name: str) -> dict[str, Any]:
        """One job as a plain dict."""
        spec, rec = self.specs[name], self.records[name]
        with self._lock:
            return {"name": name, "kind": spec.kind, "trigger": spec.describe(), "enabled": spec.enabled,
                    "target": spec.call or (", ".join(spec.targets) if spec.targets else None),
                    "next_run": self.next_run(name), "last_run": rec.last_run, "last_result": rec.last_result,
                    "last_error": rec.last_error, "duration_ms": rec.duration_ms, "runs": rec.runs,
                    "failures": rec.failures}

    def list(self) -> list[dict[str, Any]]:
        """Every job, by name."""
        return [self.describe(n) for n in sorted(self.specs)]


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= RESULT_CHARS else text[: RESULT_CHARS - 1] + "…"


class JobsActor(Actor):
    """`harvester.<node>.jobs`: the node's scheduled jobs, listable and runnable from the REPL."""

    kind = "jobs"

    def __init__(self, node: str, runner: JobRunner, role: str = "spoke") -> None:
        super().__init__(node, "jobs", role)
        self.runner = runner

    @remote
    def list(self) -> list[dict[str, Any]]:
        """Every job: trigger, next run, last run, last result or error, duration."""
        return self.runner.list()

    @remote(name=Str(48))  # job names are [a-z0-9_-]{1,48} (jobspec); unknown ones get BadRequest
    def run(self, name: str) -> dict[str, Any]:
        """Run a job now (outside its schedule) and return its record."""
        return self.runner.run(name)


def actor_caller(ns_host: str, ns_port: int) -> Callable[[str, str, tuple, dict, float], Any]:
    """Call `method` on actor `name` with a timeout and no retries (jobs may command actuators)."""
    from Pyro5.client import Proxy

    def call(name: str, method: str, args: tuple, kwargs: dict, timeout: float) -> Any:
        with Proxy(f"PYRONAME:{name}@{ns_host}:{ns_port}") as proxy:
            proxy._pyroTimeout = timeout
            try:
                return getattr(proxy, method)(*args, **kwargs)
            except pyro_errors.TimeoutError:
                raise TimeoutError(f"{name}.{method} did not answer within {timeout}s") from None

    return call
