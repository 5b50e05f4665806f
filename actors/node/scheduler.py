"""The node's scheduler: each job runs on a small thread pool at the times its trigger gives.

It keeps APScheduler 3's rules for everything a node schedules (interval jobs, trigger
objects such as APScheduler's CronTrigger, coalesce, max_instances, misfire_grace_time,
an explicit first run, modify/remove/get_jobs) but not its imports: the `apscheduler`
package loads importlib.metadata (for its own version), asyncio (to tell coroutines
apart), multiprocessing (for a process pool) and tzlocal, about 6 MB of RSS that a Pi Zero
node never uses, a fifth of its 30 MB budget. A node with a cron job still imports
APScheduler's cron trigger, and with it that package (actors.node.jobspec)."""

from __future__ import annotations

import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

log = logging.getLogger(__name__)
_UNSET: Any = object()
_ids = itertools.count(1)


class Trigger(Protocol):
    """APScheduler 3's trigger interface: the fire time after `previous_fire_time` (None: the first)."""

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None: ...


class ConflictingIdError(KeyError):
    """A job with this id exists and replace_existing was not given."""


class JobLookupError(KeyError):
    """No job with this id."""


class IntervalTrigger:
    """Every `seconds` from `start_date` (default: one interval after now), each time plus up to
    `jitter` seconds at random: APScheduler's IntervalTrigger, which a run that came late does
    not shift (the next run is the previous scheduled time plus the interval)."""

    def __init__(self, seconds: float, start_date: datetime | None = None, jitter: float | None = None,
                 now: datetime | None = None) -> None:
        if not seconds > 0:
            raise ValueError(f"an interval must be a positive number of seconds, not {seconds!r}")
        self.interval = float(seconds)
        self.start_date = start_date or (now or datetime.now(UTC)) + timedelta(seconds=self.interval)
        self.jitter = jitter

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        """The next run after `previous_fire_time`; the first is start_date or the slot after now."""
        start = self.start_date.timestamp()
        if previous_fire_time is not None:
            t = previous_fire_time.timestamp() + self.interval
        elif start > now.timestamp():
            t = start
        else:
            t = start + self.interval * math.ceil((now.timestamp() - start) / self.interval)
        if self.jitter:
            t += random.uniform(0, self.jitter)
        return datetime.fromtimestamp(t, UTC)

    def __str__(self) -> str:
        return f"interval[{timedelta(seconds=self.interval)}]"


class Job:
    """One scheduled job; `next_run_time` is None while it is paused."""

    def __init__(self, job_id: str, func: Callable[..., Any], args: tuple, kwargs: dict[str, Any], trigger: Trigger,
                 next_run_time: datetime | None, coalesce: bool, max_instances: int,
                 misfire_grace_time: float | None) -> None:
        self.id = job_id
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.trigger = trigger
        self.next_run_time = next_run_time
        self.coalesce = coalesce
        self.max_instances = max_instances
        self.misfire_grace_time = misfire_grace_time
        self.name = getattr(func, "__qualname__", repr(func))

    def __str__(self) -> str:
        return f"{self.id} ({self.name}, trigger: {self.trigger})"


class NodeScheduler:
    """Runs jobs from one thread that sleeps until the next is due; each run goes to a pool of
    at most `max_workers` threads. `clock` and `inline` (run jobs in tick(), no threads) are for tests."""

    timezone = UTC

    def __init__(self, max_workers: int = 4, *, coalesce: bool = True, max_instances: int = 1,
                 misfire_grace_time: float | None = 30, clock: Callable[[], float] = time.time,
                 inline: bool = False) -> None:
        self.max_workers = max_workers
        self._defaults = {"coalesce": coalesce, "max_instances": max_instances,
                          "misfire_grace_time": misfire_grace_time}
        self._clock = clock
        self._inline = inline
        self._jobs: dict[str, Job] = {}
        self._instances: dict[str, int] = {}
        self._skipped: dict[str, int] = {}  # job id -> runs skipped since its last start
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._running = False

    @property
    def running(self) -> bool:
        """True between start() and shutdown()."""
        return self._running

    def now(self) -> datetime:
        """The scheduler's clock as an aware datetime."""
        return datetime.fromtimestamp(self._clock(), UTC)

    # -- jobs ------------------------------------------------------------------------------
    def add_job(self, func: Callable[..., Any], trigger: str | Trigger = "interval", args: Any = None,
                kwargs: dict[str, Any] | None = None, id: str | None = None, next_run_time: Any = _UNSET,  # noqa: A002
                replace_existing: bool = False, coalesce: Any = _UNSET, max_instances: Any = _UNSET,
                misfire_grace_time: Any = _UNSET, **trigger_args: Any) -> Job:
        """Schedule `func`, APScheduler style: trigger "interval" with seconds= (and start_date=,
        jitter=), or a trigger object; next_run_time=None adds it paused."""
        now = self.now()
        if isinstance(trigger, str):
            if trigger != "interval":
                raise ValueError(f"unknown trigger {trigger!r}: use 'interval' or a trigger object")
            trigger_args.pop("timezone", None)  # fire times are instants; the zone only names them
            trigger = IntervalTrigger(now=now, **trigger_args)
        elif trigger_args:
            raise TypeError(f"trigger arguments {sorted(trigger_args)} go with trigger='interval' only")
        d = self._defaults
        job = Job(id or f"job-{next(_ids)}", func, tuple(args or ()), dict(kwargs or {}), trigger,
                  trigger.get_next_fire_time(None, now) if next_run_time is _UNSET else next_run_time,
                  d["coalesce"] if coalesce is _UNSET else coalesce,
                  d["max_instances"] if max_instances is _UNSET else max_instances,
                  d["misfire_grace_time"] if misfire_grace_time is _UNSET else misfire_grace_time)
        with self._lock:
            if job.id in self._jobs and not replace_existing:
                raise ConflictingIdError(f"a job with id {job.id!r} exists")
            self._jobs[job.id] = job
        self._wake.set()
        return job

    def modify_job(self, job_id: str, next_run_time: datetime | None) -> Job:
        """Move a job's next run (to now: run it at once)."""
        with self._lock:
            job = self._job(job_id)
            job.next_run_time = next_run_time
        self._wake.set()
        return job

    def remove_job(self, job_id: str) -> None:
        """Unschedule a job (a run in progress finishes)."""
        with self._lock:
            self._job(job_id)
            del self._jobs[job_id]

    def get_job(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        with self._lock:
            return self._jobs.get(job_id)

    def get_jobs(self) -> list[Job]:
        """Every job, soonest first, paused ones last."""
        with self._lock:
            jobs = list(self._jobs.values())
        return sorted(jobs, key=lambda j: (j.next_run_time is None, j.next_run_time or datetime.min.replace(tzinfo=UTC)))

    def _job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobLookupError(f"no job with id {job_id!r}")
        return job

    # -- running ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the scheduling thread; jobs due already run at once."""
        if self._running:
            raise RuntimeError("the scheduler is running already")
        self._running = True
        if not self._inline:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="job")
            self._thread = threading.Thread(target=self._main, name="scheduler", daemon=True)
            self._wake.set()
            self._thread.start()

    def shutdown(self, wait: bool = True) -> None:
        """Stop scheduling; with wait, return once the runs in progress have finished."""
        if not self._running:
            raise RuntimeError("the scheduler is not running")
        self._running = False
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=wait)
            self._pool = None

    def _main(self) -> None:
        wait: float | None = None
        while True:
            self._wake.wait(wait)
            self._wake.clear()
            if not self._running:
                return
            try:
                wait = self.tick()
            except Exception:  # a trigger that fails must not end every job's schedule
                log.exception("scheduling failed; trying again in a second")
                wait = 1.0

    def tick(self) -> float | None:
        """Submit every due job; returns the seconds until the next is due (None: no job is)."""
        now = self.now()
        with self._lock:
            due = sorted((j for j in self._jobs.values() if j.next_run_time is not None and j.next_run_time <= now),
                         key=lambda j: j.next_run_time)  # type: ignore[arg-type,return-value]
            for job in due:
                run_times = []
                t = job.next_run_time
                while t is not None and t <= now:
                    run_times.append(t)
                    t = job.trigger.get_next_fire_time(t, now)
                if job.coalesce:
                    run_times = run_times[-1:]
                self._submit(job, run_times)
                following = job.trigger.get_next_fire_time(run_times[-1], now)
                if following is None:
                    self._jobs.pop(job.id, None)
                else:
                    job.next_run_time = following
            upcoming = [j.next_run_time for j in self._jobs.values() if j.next_run_time is not None]
        if not upcoming:
            return None
        return min(max((min(upcoming) - now).total_seconds(), 0.0), threading.TIMEOUT_MAX)

    def _submit(self, job: Job, run_times: list[datetime]) -> None:
        """Hand a job's due runs to the pool, unless max_instances of it are running (callers lock)."""
        if self._instances.get(job.id, 0) >= job.max_instances:
            # once per spell: a run that hangs would otherwise log a line every interval, forever
            skipped = self._skipped[job.id] = self._skipped.get(job.id, 0) + 1
            if skipped == 1:
                log.warning('Execution of job "%s" skipped: maximum number of running instances reached (%d); '
                            "further skips are counted until it starts again", job, job.max_instances)
            return
        skipped = self._skipped.pop(job.id, 0)
        if skipped > 1:
            log.info('Job "%s" starts again after %d skipped runs', job, skipped)
        self._instances[job.id] = self._instances.get(job.id, 0) + 1
        if self._inline or self._pool is None:
            self._run(job, run_times)
            return
        try:
            self._pool.submit(self._run, job, run_times)
        except RuntimeError:  # the pool shut down meanwhile
            self._done(job)

    def _run(self, job: Job, run_times: list[datetime]) -> None:
        try:
            for run_time in run_times:
                if job.misfire_grace_time is not None:
                    late = self.now() - run_time
                    if late > timedelta(seconds=job.misfire_grace_time):
                        log.warning('Run time of job "%s" was missed by %s', job, late)
                        continue
                try:
                    job.func(*job.args, **job.kwargs)
                except BaseException:  # logged; the job stays scheduled, as with APScheduler
                    log.exception('Job "%s" raised an exception', job)
        finally:
            self._done(job)

    def _done(self, job: Job) -> None:
        with self._lock:
            left = self._instances.get(job.id, 1) - 1
            if left > 0:
                self._instances[job.id] = left
            else:
                self._instances.pop(job.id, None)
