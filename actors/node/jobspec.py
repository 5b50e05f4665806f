"""`[[jobs]]` in a node config: what runs when, validated with errors naming the job and field."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import TYPE_CHECKING, Any

from hal.names import NODE_NAME_RULE, PREFIX
from hal.schema import ANY, NUMBER, REQUIRED, Field, Problems, between, matches, one_of, rule

KINDS = ("call", "quiet_hours", "daily_summary", "rollup", "retention")
HUB_ONLY = ("daily_summary", "rollup", "retention")
JOB_NAME_RE = re.compile(r"^[a-z0-9_-]{1,48}\Z")
CALL_RE = re.compile(rf"^{PREFIX}\.{NODE_NAME_RULE}\.[a-z0-9_-]{{1,64}}\.[a-z_][a-z0-9_]{{0,63}}\Z")
ACTOR_RE = re.compile(rf"^{PREFIX}\.{NODE_NAME_RULE}\.[a-z0-9_-]{{1,64}}\Z")
HHMM_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)\Z")

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger


def zone(name: str) -> tzinfo:
    """The time zone called `name`; zoneinfo and its database are loaded only for a zone other than UTC."""
    if name == "UTC":
        return UTC
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def cron_trigger(expr: str, tz: str) -> CronTrigger:
    """APScheduler's cron trigger for a crontab line in time zone `tz` (imported only by nodes with cron jobs)."""
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger.from_crontab(expr, timezone=zone(tz))


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
        return cron_trigger(expr or self.cron or "", self.timezone)


def quiet_cron(hhmm: str) -> str:
    """A crontab line firing daily at HH:MM."""
    hour, minute = hhmm.split(":")
    return f"{int(minute)} {int(hour)} * * *"


def parse_jobs(rows: Any, role: str, problems: list[tuple[str, str]]) -> list[JobSpec]:
    """Validate `[[jobs]]` rows, appending (key, message) problems; returns the valid jobs."""
    if rows is None:
        return []
    p = Problems(problems)
    if not isinstance(rows, list):
        p.add("jobs", "must be an array of tables ([[jobs]])")
        return []
    out: list[JobSpec] = []
    names: set[str] = set()
    for i, row in enumerate(rows):
        job = _parse_one(p, i, row, role)
        if job is None:
            continue
        if job.name in names:
            p.add(f"jobs[{i}] ({job.name}).name", "duplicate job name")
            continue
        names.add(job.name)
        out.append(job)
    return out


def _zone(tz: Any) -> str | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return f"unknown time zone {tz!r} (use an IANA name such as Europe/Berlin)"
    return None


def _number(low: float, high: float, default: float) -> Field:
    expect = f"a number between {low} and {high}"
    return Field(NUMBER, default, between(low, high, expect), expect=expect)


_INTERVAL = f"seconds between 1 and {31 * 86400}"
_TARGETS = "an array of actor names like harvester.pi4.buzzer"
_CALL = "harvester.<node>.<actor>.<method>"
JOB_KEYS = {
    "name": Field(str, REQUIRED, matches(JOB_NAME_RE, "[a-z0-9_-]{1,48}")),
    "kind": Field(str, "call", one_of(KINDS)),
    "cron": Field(str, None, expect="a crontab string"),  # parsed below, in the job's time zone
    "interval": Field(NUMBER, None, between(1, 31 * 86400, _INTERVAL), expect=_INTERVAL),
    "timezone": Field(str, "UTC", _zone),
    "call": Field(ANY, None),  # its rule depends on the kind: CALL_KEYS
    "args": Field(list, [], expect="an array"),
    "kwargs": Field(dict, {}, expect="a table"),
    "enabled": Field(bool, True, expect="true or false"),
    "misfire_grace": _number(1, 7 * 86400, 300.0),
    "jitter": _number(0, 3600, 0.0),
    "timeout": _number(0.1, 3600, 10.0),
    "start": Field(ANY, None),  # quiet hours only: QUIET_KEYS
    "end": Field(ANY, None),
    "targets": Field(list, [], rule(lambda ts: all(isinstance(t, str) and ACTOR_RE.match(t) for t in ts), _TARGETS),
                     expect=_TARGETS),
}
# Keys that only one kind takes, and that it requires.
CALL_KEYS = {"call": Field(str, REQUIRED, matches(CALL_RE, _CALL), expect=_CALL,
                           missing=f"missing (required for kind = call: {_CALL})")}
QUIET_KEYS = {key: Field(str, REQUIRED, matches(HHMM_RE, "HH:MM"), expect="HH:MM",
                         missing="missing (required for quiet_hours as HH:MM)") for key in ("start", "end")}


def _parse_one(p: Problems, i: int, row: Any, role: str) -> JobSpec | None:
    if not isinstance(row, dict):
        p.add(f"jobs[{i}]", "must be a table")
        return None
    name = row.get("name")
    where = f"jobs[{i}] ({name})" if isinstance(name, str) else f"jobs[{i}]"
    before = len(p)
    v = p.table(where, row, JOB_KEYS)
    kind, tz = v["kind"], v["timezone"] or "UTC"
    if kind in HUB_ONLY and role != "hub":
        p.add(f"{where}.kind", f"{kind} runs on the hub only")
    cron, interval = row.get("cron"), row.get("interval")
    if kind == "quiet_hours":
        p.table(where, row, QUIET_KEYS, unknown=False)
        if row.get("start") == row.get("end") and row.get("start") is not None:
            p.add(f"{where}.end", "must differ from start")
        if cron is not None or interval is not None:
            p.add(f"{where}.cron", "quiet_hours takes start and end, not cron or interval")
    elif (cron is None) == (interval is None) and kind == "call":
        p.add(f"{where}.cron", "give exactly one of cron (crontab, 5 fields) or interval (seconds)")
    if v["cron"] is not None:
        try:
            cron_trigger(cron, tz)
        except ValueError as exc:
            p.add(f"{where}.cron", f"bad cron expression {cron!r}: {exc}")
    if kind == "call":
        p.table(where, row, CALL_KEYS, unknown=False)
    elif kind is not None and row.get("call") is not None:  # a wrong kind is reported already
        p.add(f"{where}.call", f"only for kind = call, not {kind}")
    if len(p) > before:
        return None
    if kind in ("daily_summary", "retention") and cron is None and interval is None:
        cron = "5 0 * * *" if kind == "daily_summary" else "30 3 * * *"
    if kind == "rollup" and cron is None and interval is None:
        interval = 60
    return JobSpec(name=name, kind=kind, cron=cron, interval=float(interval) if interval is not None else None,
                   timezone=tz, call=v["call"], args=tuple(v["args"]), kwargs=dict(v["kwargs"]), enabled=v["enabled"],
                   misfire_grace=float(v["misfire_grace"]), jitter=float(v["jitter"]), timeout=float(v["timeout"]),
                   start=row.get("start"), end=row.get("end"), targets=tuple(v["targets"]))
