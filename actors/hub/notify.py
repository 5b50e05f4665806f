"""Alerts to phones and inboxes: one message per alert state change per channel, through a
durable queue in the hub's store, with reminders, quiet hours and a rate cap.

Where messages come from: the alerts table, read when an alert is stored or acknowledged (and
every few seconds, for reminders). Each episode (raised_by, plugin,
alert, since) owes each channel that routes it a `raised`, then while it is active and
unacknowledged a `reminder` every `repeat` seconds, an `acknowledged` (saying by whom) and a
`resolved` ("resolved after 14 min"). Each message has a key (episode + kind), and a key is
queued once (INSERT OR IGNORE) and sent once: whatever the order or timing in which alert
events reached this hub, a restart, or another hub's copy, a state change gives one message.
Only transitions after a channel was first configured count, so adding a channel to a hub
with a long history does not replay it.

Sending: one thread per channel takes due messages in order (another queues them). After the channel accepted a
message, the send is recorded (notify_sent) and the queue entry deleted in one transaction.
A crash between the channel's answer and that transaction sends the message again on restart:
at-least-once there, which no channel here can do better than (ntfy and e-mail have no
de-duplication; a webhook receiver can drop a repeated `X-Harvester-Id`).

- Transient failures (network down, timeouts, 5xx, 429, SMTP 4xx) are retried with backoff,
  1 s doubling to 10 min, across restarts. A permanent one (4xx, auth refused) drops that
  message, recorded as failed, and the channel shows the error until a message goes through.
- Quiet hours hold non-critical messages; when they end, one digest says what was held.
- The rate cap (default 20 an hour per channel) turns the excess into one "N more suppressed"
  message once the hour has room again, rather than silence.
- With several hubs every hub queues; only the Raft leader sends, and the keys it sent are
  recorded through Raft, so the next leader does not send them again (at-least-once only for
  what the old leader sent in its last moments)."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from actors.base import Actor, Str, remote
from actors.errors import BadRequest
from actors.hub.channels import Channel, Message, Permanent, Transient, deliver
from actors.node.config import NotifyConfig

log = logging.getLogger(__name__)
TICK_S = 1.0
QUEUE_TICK_S = 5.0  # the alerts table is read this often without a nudge (it reads a week of rows)
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 600.0
WINDOW_S = 7 * 86400  # alert rows looked at: changed within a week, or still active
SEVERITY_ORDER = ("info", "warning", "critical")
HOUR_S = 3600.0
BATCHES_PER_STEP = 20  # up to 2,000 messages a channel looks at per tick
Deliver = Callable[[Channel, Message], str]


class Ledger(Protocol):
    """Several hubs: who leads, and which message keys some hub sent (through Raft)."""

    def leads(self) -> bool: ...

    def notified(self, channel: str, key: str) -> bool: ...

    def mark_notified(self, channel: str, keys: list[str]) -> None: ...


def episode_of(alert: dict[str, Any]) -> str:
    """An alert row's episode, as text: the same on every hub."""
    return json.dumps([alert["raised_by"], alert["plugin"], alert["alert"], alert["since"]], separators=(",", ":"))


def minutes_text(seconds: float) -> str:
    """`14 min`, `2 h 5 min`, `40 s`."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    m = s // 60
    return f"{m // 60} h {m % 60} min" if m >= 60 else f"{m} min"


def quiet_now(cfg: NotifyConfig, now: float) -> bool:
    """True inside the channel's quiet hours (start..end, local time of its zone; may wrap midnight)."""
    if cfg.quiet_start is None or cfg.quiet_end is None:
        return False
    zone = ZoneInfo(cfg.timezone) if cfg.timezone else None
    local = datetime.fromtimestamp(now, zone)
    minute = local.hour * 60 + local.minute
    start, end = cfg.quiet_start, cfg.quiet_end
    return start <= minute < end if start < end else minute >= start or minute < end


def routes(cfg: NotifyConfig, alert: dict[str, Any]) -> bool:
    """Does this channel take messages about this alert (severity, node, plugin)?"""
    return (alert["severity"] in cfg.severities and (not cfg.nodes or alert["raised_by"] in cfg.nodes
                                                      or alert["node"] in cfg.nodes)
            and (not cfg.plugins or alert["plugin"] in cfg.plugins))


class NotifyConfigError(ValueError):
    """A channel's secret file cannot be read: the hub says so at start (a channel without its
    login would fail every message)."""


def _secret(path: Any, what: str) -> str:
    if path is None:
        return ""
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise NotifyConfigError(f"notify: cannot read {what} {path}: {exc.strerror or exc}") from None


def channel_of(cfg: NotifyConfig, hub: str = "") -> Channel:
    """The sender's view of a configured channel, with its secrets read from their files."""
    urls = tuple(line.strip() for line in _secret(cfg.urls_file, "urls_file").splitlines()
                 if line.strip() and not line.lstrip().startswith("#"))
    return Channel(name=cfg.name, kind=cfg.kind, timeout=cfg.timeout, hub=hub, url=cfg.url,
                   token=_secret(cfg.token_file, "token_file"), secret=_secret(cfg.secret_file, "secret_file"),
                   host=cfg.host, port=cfg.port, security=cfg.security, username=cfg.username,
                   password=_secret(cfg.password_file, "password_file"), sender=cfg.sender, to=cfg.to, ca=cfg.ca,
                   urls=urls)


def _owed(cfg: NotifyConfig, a: dict[str, Any], start: float, now: float) -> list[tuple[str, float, int]]:
    """The messages (kind, when, reminder number) one alert row owes a channel configured at `start`."""
    owed: list[tuple[str, float, int]] = []
    if a["since"] >= start:
        owed.append(("raised", a["since"], 0))
    if a["acknowledged"] and (a.get("acked_ts") or now) >= start:
        owed.append(("acknowledged", a.get("acked_ts") or now, 0))
    if not a["active"] and a["updated"] >= start:
        owed.append(("resolved", a["updated"], 0))
    if a["active"] and not a["acknowledged"] and cfg.repeat > 0:
        n = int((now - a["since"]) // cfg.repeat)
        if n >= 1 and a["since"] + n * cfg.repeat >= start:
            owed.append(("reminder", a["since"] + n * cfg.repeat, n))
    return owed


def compose(kind: str, alert: dict[str, Any], now: float, hub: str, n: int = 0) -> tuple[str, str, dict[str, Any]]:
    """Title, body and fields of a message about one alert episode."""
    where = "/".join(x for x in (alert["node"], alert.get("sensor"), alert.get("quantity")) if x)
    since = datetime.fromtimestamp(alert["since"]).strftime("%Y-%m-%d %H:%M:%S")
    head = {"raised": "", "reminder": "still: ", "acknowledged": "acknowledged: ", "resolved": "resolved: "}[kind]
    title = f"{head}{alert['node']}: {alert['message']}"
    lines = [f"{alert['severity']} alert {alert['plugin']}/{alert['alert']} on {where}, since {since}"]
    if alert.get("value") is not None:
        lines.append(f"value: {alert['value']:g}")
    if kind == "reminder":
        lines.append(f"active for {minutes_text(now - alert['since'])}, not acknowledged (reminder {n})")
    elif kind == "acknowledged":
        lines.append(f"acknowledged by {alert.get('acked_by') or 'someone'}"
                     + (f" after {minutes_text(alert['acked_ts'] - alert['since'])}" if alert.get("acked_ts") else ""))
    elif kind == "resolved":
        lines.append(f"resolved after {minutes_text(alert['updated'] - alert['since'])}")
    lines.append(f"hub: {hub}")
    fields = {k: alert.get(k) for k in ("raised_by", "plugin", "alert", "node", "sensor", "quantity", "value",
                                        "severity", "since", "acked_by")}
    return title, "\n".join(lines), {**fields, "hub": hub}


class ChannelState:
    """What health, /metrics and the dashboard show about a channel."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0
        self.suppressed_total = 0
        self.last_error: str | None = None
        self.error_since: float | None = None
        self.last_sent: float | None = None


class Notifier:
    """The queue and the channels' threads of one hub."""

    def __init__(self, configs: list[NotifyConfig], store: Any, hub_name: str, *,
                 ledger: Ledger | None = None, send: Deliver = deliver, clock: Callable[[], float] = time.time) -> None:
        self.configs = {c.name: c for c in configs}
        self.store = store
        self.hub_name = hub_name
        self.ledger = ledger
        self.send = send
        self.clock = clock
        self.states = {c.name: ChannelState() for c in configs}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._queued = {c.name: threading.Event() for c in configs}  # new messages for a channel's thread
        self._threads: list[threading.Thread] = []
        self._next_try: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()
        now = clock()
        self._started = {c.name: store.notify_channel_start(c.name, now) for c in configs}
        # sent in the last hour, per channel (the rate cap), from the store: a restart keeps the count
        self._recent = {c.name: deque(store.notify_sent_since(c.name, now - HOUR_S)) for c in configs}
        self.channels = {c.name: channel_of(c, hub_name) for c in configs}
        # keys queued or sent within the window, per channel: a tick queues only what is new
        self._known = {c.name: store.notify_keys(c.name, now - 2 * WINDOW_S) for c in configs}

    # -- running -----------------------------------------------------------------------------
    def start(self) -> Notifier:
        """One thread queues what the alerts owe; one per channel sends (a slow mail server holds up
        only its own channel)."""
        loops = [(self._run_queue, "notify")] + [(self._channel_loop(n), f"notify:{n}") for n in self.configs]
        for target, name in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for event in self._queued.values():
            event.set()
        for t in self._threads:
            t.join(10.0)

    def nudge(self) -> None:
        """An alert changed: look now rather than at the next tick."""
        self._wake.set()

    def _run_queue(self) -> None:
        while not self._stop.is_set():
            try:
                if self.enqueue(self.clock()):
                    for event in self._queued.values():
                        event.set()
                if self.ledger is not None and not self.ledger.leads():
                    self._follow()
            except Exception:  # noqa: BLE001 (the notifier outlives any one bad moment; it retries)
                log.exception("notifications: unexpected error queueing messages; trying again")
            # An alert stored or acknowledged wakes this at once (nudge()); the tick only serves
            # reminders and alerts that came another way (copied from a peer hub).
            self._wake.wait(QUEUE_TICK_S)
            self._wake.clear()

    def _channel_loop(self, name: str) -> Callable[[], None]:
        def loop() -> None:
            while not self._stop.is_set():
                self._queued[name].wait(TICK_S / 2)
                self._queued[name].clear()
                try:
                    if self.ledger is None or self.ledger.leads():
                        self._send_due(name, self.clock())
                except Exception:  # noqa: BLE001
                    log.exception("notify %s: unexpected error; trying again", name)
        return loop

    def step(self) -> None:
        """Queue what the alerts owe, then send what is due (leader only with several hubs)."""
        now = self.clock()
        self.enqueue(now)
        if self.ledger is not None and not self.ledger.leads():
            self._follow()
            return
        for name in self.configs:
            if self._stop.is_set():
                return
            self._send_due(name, now)

    # -- what is owed -------------------------------------------------------------------------
    def enqueue(self, now: float) -> int:
        """Queue every message the alerts owe each channel (a key already queued or sent is skipped)."""
        alerts = self.store.alerts_changed_since(now - WINDOW_S)
        rows: list[tuple[str, str, str, str, float]] = []
        for name, cfg in self.configs.items():
            start, known = self._started[name], self._known[name]
            for a in alerts:
                if not routes(cfg, a):
                    continue
                ep = episode_of(a)
                for kind, at, n in _owed(cfg, a, start, now):
                    key = f"{ep}:{kind}" + (f":{n}" if kind == "reminder" else "")
                    if key in known:
                        continue
                    title, body, fields = compose(kind, a, now, self.hub_name, n)
                    message = {"kind": kind, "severity": a["severity"], "title": title, "body": body,
                               "fields": fields, "ts": at}
                    rows.append((name, key, kind, json.dumps(message, default=str), at))
                    known.add(key)
        return self.store.notify_enqueue(rows, now) if rows else 0

    # -- sending -------------------------------------------------------------------------------
    def _send_due(self, name: str, now: float) -> None:
        if now < self._next_try.get(name, 0.0):
            return
        cfg = self.configs[name]
        quiet = quiet_now(cfg, now)
        if not quiet:
            self._release_held(name, now)
        recent = self._recent[name]
        while recent and recent[0] < now - HOUR_S:
            recent.popleft()
        for _ in range(BATCHES_PER_STEP):
            due = self.store.notify_due(name, now, limit=100)
            if not due:
                break
            if not self._send_batch(name, due, quiet, now):
                return  # retry later, in order
        pending = self.store.notify_suppressed(name)
        if pending and len(recent) < cfg.rate_per_hour:
            self._queue_summary(name, "suppressed", f"{pending} more alert messages were suppressed",
                                f"{pending} alert messages were not sent: this channel sends at most "
                                f"{cfg.rate_per_hour} an hour. The dashboard lists every alert.", now)
            self.store.notify_add_suppressed(name, -pending)

    def _send_batch(self, name: str, due: list[tuple[str, str, str, bool]], quiet: bool, now: float) -> bool:
        """Send (or hold, or suppress) due messages in order; False when a failure says wait."""
        cfg, state, recent = self.configs[name], self.states[name], self._recent[name]
        for key, kind, raw, held in due:
            message = json.loads(raw)
            if self.ledger is not None and self.ledger.notified(name, key):
                self.store.notify_done(name, key, now, "sent by another hub")
                continue
            if quiet and message["severity"] != "critical" and kind != "test":
                if not held:
                    self.store.notify_hold(name, key)
                continue
            if kind not in ("test", "suppressed") and len(recent) >= cfg.rate_per_hour:
                self.store.notify_done(name, key, now, "suppressed: rate cap")
                self.store.notify_add_suppressed(name, 1)
                state.suppressed_total += 1
                continue
            if not self._deliver(name, key, kind, message, now):
                return False
        return True

    def _deliver(self, name: str, key: str, kind: str, message: dict[str, Any], now: float) -> bool:
        state = self.states[name]
        msg = Message(id=f"{self.hub_name}:{name}:{key}", kind=kind, severity=message["severity"],
                      title=message["title"], body=message["body"], fields=message["fields"], ts=message["ts"])
        try:
            receipt = self.send(self.channels[name], msg)
        except Transient as exc:
            return self._later(name, key, str(exc), exc.retry_after, now)
        except Exception as exc:  # noqa: BLE001 (a bug in a channel: retried like a network failure, and logged)
            if not isinstance(exc, Permanent):
                log.exception("notify %s: unexpected error sending; retrying", name)
                return self._later(name, key, f"unexpected {type(exc).__name__}: {exc}", None, now)
            log.error("notify %s: %s: the message is dropped (%s)", name, exc, message["title"])
            state.failed += 1
            state.last_error, state.error_since = str(exc), state.error_since or now
            self.store.notify_done(name, key, now, f"failed: {exc}")
            return True
        self.store.notify_done(name, key, now, receipt, counted=True)  # recorded and dequeued in one transaction
        if self.ledger is not None:
            self.ledger.mark_notified(name, [key])
        if state.last_error is not None:
            log.info("notify %s: sending again", name)
        state.sent += 1
        state.last_sent = now
        state.last_error = state.error_since = None
        self._failures[name] = 0
        self._recent[name].append(now)
        return True

    def _later(self, name: str, key: str, error: str, retry_after: float | None, now: float) -> bool:
        """A send that may work later: back off (the message keeps its place in the queue)."""
        state = self.states[name]
        if state.last_error is None:
            log.warning("notify %s: %s; retrying with backoff (the message waits in the hub's store)", name, error)
            state.error_since = now
        state.last_error = error
        failures = self._failures.get(name, 0)
        delay = retry_after or min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** failures)
        self._failures[name] = failures + 1
        self._next_try[name] = now + delay * random.uniform(0.8, 1.0)
        self.store.notify_attempt(name, key, error)
        return False

    def _release_held(self, name: str, now: float) -> None:
        """Quiet hours are over: one digest of what they held."""
        held = self.store.notify_held(name)
        if not held:
            return
        titles = [json.loads(raw)["title"] for _, raw in held]
        shown = "\n".join(f"- {t}" for t in titles[:30]) + (f"\n… and {len(titles) - 30} more" if len(titles) > 30 else "")
        self._queue_summary(name, "digest", f"{len(titles)} alert messages during quiet hours",
                            f"Held during quiet hours:\n{shown}", now)
        for key, _ in held:
            self.store.notify_done(name, key, now, "in a digest")

    def _queue_summary(self, name: str, kind: str, title: str, body: str, now: float) -> None:
        key = f"{kind}:{now:.3f}"
        message = {"kind": kind, "severity": "info", "title": title, "body": body, "fields": {"hub": self.hub_name},
                   "ts": now}
        self.store.notify_enqueue([(name, key, kind, json.dumps(message), now)], now)

    def _follow(self) -> None:
        """Not the leader: drop queue entries the cluster says were sent."""
        assert self.ledger is not None
        now = self.clock()
        for name in self.configs:
            for key, _kind, _raw, _held in self.store.notify_due(name, now + WINDOW_S, limit=500):
                if self.ledger.notified(name, key):
                    self.store.notify_done(name, key, now, "sent by another hub")

    # -- the test button and views ------------------------------------------------------------------
    def test(self, name: str | None = None) -> list[dict[str, Any]]:
        """Send a test message now (one channel, or each); the outcome of each, in words."""
        names = [name] if name else list(self.configs)
        out = []
        now = self.clock()
        for n in names:
            if n not in self.configs:
                raise KeyError(f"no notification channel {n!r}; configured: {', '.join(self.configs) or 'none'}")
            msg = Message(id=f"{self.hub_name}:{n}:test:{now:.3f}", kind="test", severity="info",
                          title=f"Harvester test message from {self.hub_name}",
                          body=f"If you read this, channel {n} works.", fields={"hub": self.hub_name}, ts=now)
            try:
                out.append({"channel": n, "ok": True, "result": self.send(self.channels[n], msg)})
            except (Transient, Permanent) as exc:
                out.append({"channel": n, "ok": False, "result": f"{type(exc).__name__.lower()}: {exc}"})
        return out

    def status(self) -> list[dict[str, Any]]:
        """Each channel: sent, failed, suppressed, waiting, last error and since when."""
        out = []
        for name, cfg in self.configs.items():
            s = self.states[name]
            out.append({"name": name, "kind": cfg.kind, "sent": s.sent, "failed": s.failed,
                        "suppressed": s.suppressed_total, "waiting": self.store.notify_waiting(name),
                        "last_error": s.last_error, "error_since": s.error_since, "last_sent": s.last_sent,
                        "quiet": quiet_now(cfg, self.clock())})
        return out


def describe(status: dict[str, Any]) -> str:
    """One line about a channel for `harvester health`."""
    parts = [f"{status['sent']} sent"]
    if status["waiting"]:
        parts.append(f"{status['waiting']} waiting")
    if status["suppressed"]:
        parts.append(f"{status['suppressed']} suppressed by the rate cap")
    if status["failed"]:
        parts.append(f"{status['failed']} failed for good")
    if status["quiet"]:
        parts.append("quiet hours")
    if status["last_error"]:
        since = time.strftime("%H:%M:%S", time.localtime(status["error_since"])) if status["error_since"] else "?"
        parts.append(f"since {since}: {status['last_error']}")
    return f"notify {status['name']} ({status['kind']}): " + ", ".join(parts)



class NotifyActor(Actor):
    """`harvester.<hub>.notify`: the notification channels' state, and a test message on demand."""

    kind = "notify"

    def __init__(self, node: str, notifier: Notifier, tags: set[str] | None = None) -> None:
        super().__init__(node, "notify", role="hub", tags=tags)
        self.notifier = notifier

    @remote
    def channels(self) -> list[dict[str, Any]]:
        """Each channel: kind, sent, failed, suppressed, waiting, last error, quiet now."""
        return self.notifier.status()

    @remote(channel=Str(64, optional=True))
    def test(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Send a test message now on one channel (or each); the outcome of each."""
        try:
            return self.notifier.test(channel or None)
        except KeyError as exc:
            raise BadRequest(str(exc.args[0])) from None
