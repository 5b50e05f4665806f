"""`[[jobs]]` in a node config: what runs when, validated with errors naming the job and field."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from hal.names import NODE_NAME_RULE, PREFIX

KINDS = ("call", "quiet_hours", "daily_summary", "rollup", "retention")
HUB_ONLY = ("daily_summary", "rollup", "retention")
JOB_NAME_RE = re.compile(r"^[a-z0-9_-]{1,48}$")
CALL_RE = re.compile(rf"^{PREFIX}\.{NODE_NAME_RULE}\.[a-z0-9_-]{{1,64}}\.[a-z_][a-z0-9_]{{0,63}}$")
ACTOR_RE = re.compile(rf"^{PREFIX}\.{NODE_NAME_RULE}\.[a-z0-9_-]{{1,64}}$")
HHMM_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
KEYS = {"name", "kind", "cron", "interval", "timezone", "call", "args", "kwargs", "enabled", "misfire_grace",
        "jitter", "timeout", "start", "end", "targets"}


@dataclass(frozen=True)
class JobSpec:
    """One validated job."""

    name: str
    kind: str
    cron: str | None = None
    interval: float | None = None
    timezone: str = "UTC"
    call: str | None = None  # harvester.<node>.<actor>.<method>
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    misfire_grace: float = 300.0
    jitter: float = 0.0
    timeout: float = 10.0
    start: str | None = None  # quiet hours "HH:MM"
    end: str | None = None
    targets: tuple[str, ...] = ()  # quiet hours: buzzer actors

    def describe(self) -> str:
        """The trigger in words, for listings."""
        if self.kind == "quiet_hours":
            return f"quiet {self.start}-{self.end} {self.timezone}"
        if self.cron:
            return f"cron '{self.cron}' {self.timezone}"
        return f"every {self.interval:g}s"

    def cron_trigger(self, expr: str | None = None) -> CronTrigger:
        """The APScheduler cron trigger for `expr` (default: this job's cron)."""
        return CronTrigger.from_crontab(expr or self.cron or "", timezone=ZoneInfo(self.timezone))


def quiet_cron(hhmm: str) -> str:
    """A crontab line firing daily at HH:MM."""
    hour, minute = hhmm.split(":")
    return f"{int(minute)} {int(hour)} * * *"


def parse_jobs(rows: Any, role: str, problems: list[tuple[str, str]]) -> list[JobSpec]:
    """Validate `[[jobs]]` rows, appending (key, message) problems; returns the valid jobs."""
    if rows is None:
        return []
    if not isinstance(rows, list):
        problems.append(("jobs", "must be an array of tables ([[jobs]])"))
        return []
    out: list[JobSpec] = []
    names: set[str] = set()
    for i, row in enumerate(rows):
        job = _parse_one(i, row, role, problems)
        if job is None:
            continue
        if job.name in names:
            problems.append((f"jobs[{i}] ({job.name}).name", "duplicate job name"))
            continue
        names.add(job.name)
        out.append(job)
    return out


def _parse_one(i: int, row: Any, role: str, problems: list[tuple[str, str]]) -> JobSpec | None:
    if not isinstance(row, dict):
        problems.append((f"jobs[{i}]", "must be a table"))
        return None
    name = row.get("name")
    where = f"jobs[{i}] ({name})" if isinstance(name, str) else f"jobs[{i}]"
    before = len(problems)

    def bad(key: str, msg: str) -> None:
        problems.append((f"{where}.{key}", msg))

    for key in row:
        if key not in KEYS:
            bad(key, f"unknown key (known: {', '.join(sorted(KEYS))})")
    if not isinstance(name, str) or not JOB_NAME_RE.match(name):
        bad("name", "required; must match [a-z0-9_-]{1,48}")
    kind = row.get("kind", "call")
    if kind not in KINDS:
        bad("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    elif kind in HUB_ONLY and role != "hub":
        bad("kind", f"{kind} runs on the hub only")
    tz = row.get("timezone", "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        bad("timezone", f"unknown time zone {tz!r} (use an IANA name such as Europe/Berlin)")
        tz = "UTC"
    cron, interval = row.get("cron"), row.get("interval")
    if kind == "quiet_hours":
        for key in ("start", "end"):
            v = row.get(key)
            if not isinstance(v, str) or not HHMM_RE.match(v):
                bad(key, f"required for quiet_hours as HH:MM, got {v!r}")
        if row.get("start") == row.get("end") and row.get("start") is not None:
            bad("end", "must differ from start")
        if cron is not None or interval is not None:
            bad("cron", "quiet_hours takes start and end, not cron or interval")
    elif (cron is None) == (interval is None) and kind == "call":
        bad("cron", "give exactly one of cron (crontab, 5 fields) or interval (seconds)")
    if cron is not None:
        if not isinstance(cron, str):
            bad("cron", f"must be a crontab string, got {cron!r}")
        else:
            try:
                CronTrigger.from_crontab(cron, timezone=ZoneInfo(tz))
            except ValueError as exc:
                bad("cron", f"bad cron expression {cron!r}: {exc}")
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, (int, float))
                                 or not 1 <= interval <= 31 * 86400):
        bad("interval", f"must be seconds between 1 and {31 * 86400}, got {interval!r}")
    call = row.get("call")
    if kind == "call":
        if not isinstance(call, str) or not CALL_RE.match(call):
            bad("call", f"required: harvester.<node>.<actor>.<method>, got {call!r}")
    elif call is not None:
        bad("call", f"only for kind = call, not {kind}")
    args, kwargs = row.get("args", []), row.get("kwargs", {})
    if not isinstance(args, list):
        bad("args", "must be an array")
    if not isinstance(kwargs, dict):
        bad("kwargs", "must be a table")
    targets = row.get("targets", [])
    if not isinstance(targets, list) or not all(isinstance(t, str) and ACTOR_RE.match(t) for t in targets):
        bad("targets", "must be an array of actor names like harvester.pi4.buzzer")
    numbers = {"misfire_grace": (1, 7 * 86400, 300.0), "jitter": (0, 3600, 0.0), "timeout": (0.1, 3600, 10.0)}
    values: dict[str, float] = {}
    for key, (low, high, default) in numbers.items():
        v = row.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
            bad(key, f"must be a number between {low} and {high}, got {v!r}")
            v = default
        values[key] = float(v)
    enabled = row.get("enabled", True)
    if not isinstance(enabled, bool):
        bad("enabled", f"must be true or false, got {enabled!r}")
    if len(problems) > before:
        return None
    if kind in ("daily_summary", "retention") and cron is None and interval is None:
        cron = "5 0 * * *" if kind == "daily_summary" else "30 3 * * *"
    if kind == "rollup" and cron is None and interval is None:
        interval = 60
    return JobSpec(name=name, kind=kind, cron=cron, interval=float(interval) if interval is not None else None,
                   timezone=tz, call=call, args=tuple(args), kwargs=dict(kwargs), enabled=enabled,
                   misfire_grace=values["misfire_grace"], jitter=values["jitter"], timeout=values["timeout"],
                   start=row.get("start"), end=row.get("end"), targets=tuple(targets))
