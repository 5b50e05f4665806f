"""The notifier over a real store with an injected clock: one message per alert state change per
channel, reminders, routing, retries across restarts, the rate cap, quiet hours and the Raft ledger."""

from __future__ import annotations

import calendar
from pathlib import Path
from typing import Any

import pytest

from actors.hub.channels import Channel, Message, Permanent, Transient
from actors.hub.notify import Notifier, describe
from actors.hub.store import Store
from actors.node.config import NotifyConfig

T0 = float(calendar.timegm((2026, 12, 3, 12, 0, 0)))  # noon UTC


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Outbox:
    """The channels' stand-in: records every message, fails on demand."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Message]] = []
        self.fail: list[Exception] = []

    def __call__(self, channel: Channel, message: Message) -> str:
        if self.fail:
            raise self.fail.pop(0)
        self.sent.append((channel.name, message))
        return "HTTP 200"

    def kinds(self, channel: str | None = None) -> list[str]:
        return [m.kind for c, m in self.sent if channel in (None, c)]


def config(name: str = "phone", **kw: Any) -> NotifyConfig:
    return NotifyConfig(name, "webhook", url="http://127.0.0.1:9/hook", timezone="UTC", **kw)


def event(state: str, alert: str = "hot", since: float = T0 + 10, ts: float | None = None, severity: str = "warning",
          node: str = "pi4", plugin: str = "room_temperature") -> dict[str, Any]:
    return {"raised_by": node, "plugin": plugin, "alert": alert, "state": state, "severity": severity,
            "message": f"{alert} in the room", "node": node, "sensor": "dht22", "quantity": "temperature",
            "value": 31.5, "ts": ts if ts is not None else since, "since": since}


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "hub.sqlite3")
    yield s
    s.close()


def make(store: Store, clock: Clock, outbox: Outbox, *configs: NotifyConfig, ledger: Any = None) -> Notifier:
    return Notifier(list(configs) or [config()], store, "hub", ledger=ledger, send=outbox, clock=clock)


def test_one_message_per_state_change_also_across_a_restart(store):
    clock, outbox = Clock(), Outbox()
    n = make(store, clock, outbox)
    store.record_alerts([event("raised")], T0 + 10)
    clock.t = T0 + 11
    n.step()
    n.step()
    assert outbox.kinds() == ["raised"]
    again = make(store, clock, outbox)  # a hub restart
    again.step()
    assert outbox.kinds() == ["raised"]
    msg = outbox.sent[0][1]
    assert msg.title == "pi4: hot in the room" and msg.severity == "warning" and "31.5" in msg.body
    store.acknowledge(store.alerts()[0]["id"], by="operator", ts=T0 + 60)
    clock.t = T0 + 61
    again.step()
    store.record_alerts([event("cleared", ts=T0 + 10 + 14 * 60)], T0 + 900)
    clock.t = T0 + 901
    again.step()
    again.step()
    assert outbox.kinds() == ["raised", "acknowledged", "resolved"]
    assert "acknowledged by operator" in outbox.sent[1][1].body
    assert "resolved after 14 min" in outbox.sent[2][1].body
    assert len({m.id for _, m in outbox.sent}) == 3


def test_reminders_every_repeat_until_acknowledged(store):
    clock, outbox = Clock(), Outbox()
    n = make(store, clock, outbox, config(repeat=600))
    store.record_alerts([event("raised")], T0 + 10)
    for minutes in (1, 9, 11, 15, 21, 25):
        clock.t = T0 + 10 + minutes * 60
        n.step()
    assert outbox.kinds() == ["raised", "reminder", "reminder"]
    assert "reminder 2" in outbox.sent[2][1].body
    store.acknowledge(store.alerts()[0]["id"], by="ann", ts=clock.t)
    for minutes in (31, 41, 51):
        clock.t = T0 + 10 + minutes * 60
        n.step()
    assert outbox.kinds() == ["raised", "reminder", "reminder", "acknowledged"]


def test_routing_by_severity_node_and_plugin(store):
    clock, outbox = Clock(), Outbox()
    n = make(store, clock, outbox, config("critical_only", severities=("critical",)),
             config("pizero_only", nodes=("pizero",)), config("cpu_only", plugins=("cpu_temperature",)),
             config("all"))
    store.record_alerts([event("raised", alert="a", severity="critical"),
                         event("raised", alert="b", node="pizero"),
                         event("raised", alert="c", plugin="cpu_temperature")], T0 + 10)
    clock.t = T0 + 11
    n.step()
    by = {c: sorted(m.fields["alert"] for ch, m in outbox.sent if ch == c) for c in ("critical_only", "pizero_only",
                                                                                       "cpu_only", "all")}
    assert by == {"critical_only": ["a"], "pizero_only": ["b"], "cpu_only": ["c"], "all": ["a", "b", "c"]}


def test_a_receiver_failing_three_times_gets_the_message_once_even_across_a_restart(store):
    clock, outbox = Clock(), Outbox()
    outbox.fail = [Transient("HTTP 503"), Transient("connection refused"), Transient("timed out")]
    n = make(store, clock, outbox)
    store.record_alerts([event("raised")], T0 + 10)
    clock.t = T0 + 11
    n.step()
    status = n.status()[0]
    assert status["last_error"] == "HTTP 503" and status["waiting"] == 1 and "HTTP 503" in describe(status)
    n.step()  # inside its backoff: not tried
    assert len(outbox.fail) == 2
    clock.t += 5
    n.step()
    restarted = make(store, clock, outbox)  # the queue is in the store
    clock.t += 30
    restarted.step()
    clock.t += 30
    restarted.step()
    assert outbox.kinds() == ["raised"] and not outbox.fail and restarted.status()[0]["waiting"] == 0


def test_a_permanent_failure_drops_that_message_and_is_shown(store):
    clock, outbox = Clock(), Outbox()
    outbox.fail = [Permanent("HTTP 401 Unauthorized")]
    n = make(store, clock, outbox)
    store.record_alerts([event("raised", alert="a"), event("raised", alert="b", since=T0 + 20)], T0 + 20)
    clock.t = T0 + 21
    n.step()
    status = n.status()[0]
    assert status["failed"] == 1 and status["last_error"] is None and outbox.kinds() == ["raised"]
    assert [m.fields["alert"] for _, m in outbox.sent] == ["b"]


def test_a_storm_of_200_alerts_is_capped_with_one_summary(store):
    clock, outbox = Clock(), Outbox()
    n = make(store, clock, outbox, config(rate_per_hour=20))
    store.record_alerts([event("raised", alert=f"a{i}", since=T0 + i * 0.3) for i in range(200)], T0 + 60)
    clock.t = T0 + 61
    n.step()
    assert outbox.kinds() == ["raised"] * 20
    assert n.status()[0]["suppressed"] == 180
    clock.t = T0 + 62 + 3600  # the hour has room again: one summary (queued, then sent), not 180 messages
    n.step()
    n.step()
    summary = [m for _, m in outbox.sent if m.kind == "suppressed"]
    assert len(summary) == 1 and "180 more alert messages were suppressed" in summary[0].title
    clock.t += 60
    n.step()
    assert len(outbox.sent) == 21


def test_quiet_hours_hold_non_critical_messages_for_a_digest(store):
    quiet = calendar.timegm((2026, 12, 3, 23, 0, 0))
    clock, outbox = Clock(quiet), Outbox()
    n = make(store, clock, outbox, config(quiet_start=22 * 60, quiet_end=7 * 60))
    store.record_alerts([event("raised", alert="warm", since=quiet + 1),
                         event("raised", alert="fire", since=quiet + 2, severity="critical"),
                         event("raised", alert="damp", since=quiet + 3)], quiet + 3)
    clock.t = quiet + 10
    n.step()
    assert [m.fields["alert"] for _, m in outbox.sent] == ["fire"]  # critical goes through
    assert n.status()[0]["quiet"]
    clock.t = calendar.timegm((2026, 12, 4, 6, 59, 0))
    n.step()
    assert len(outbox.sent) == 1
    clock.t = calendar.timegm((2026, 12, 4, 7, 0, 30))
    n.step()
    n.step()
    digest = [m for _, m in outbox.sent if m.kind == "digest"]
    assert len(digest) == 1 and digest[0].title == "2 alert messages during quiet hours"
    assert "pi4: warm in the room" in digest[0].body and "pi4: damp in the room" in digest[0].body
    assert len(outbox.sent) == 2 and n.status()[0]["waiting"] == 0


def test_a_channel_added_later_does_not_replay_history(store):
    clock, outbox = Clock(T0 + 100), Outbox()
    store.record_alerts([event("raised", since=T0)], T0)
    n = make(store, clock, outbox)
    n.step()
    assert outbox.sent == []
    store.record_alerts([event("cleared", since=T0, ts=T0 + 200)], T0 + 200)
    clock.t = T0 + 201
    n.step()
    assert outbox.kinds() == ["resolved"]  # a change after the channel began is told


def test_a_crash_between_the_send_and_its_record_sends_the_same_message_again(store, monkeypatch):
    clock, outbox = Clock(), Outbox()
    n = make(store, clock, outbox)
    store.record_alerts([event("raised")], T0 + 10)
    clock.t = T0 + 11
    real = store.notify_done

    def killed(*args: Any, **kwargs: Any) -> None:
        raise OSError("killed before the send was recorded")
    monkeypatch.setattr(store, "notify_done", killed)
    with pytest.raises(OSError):
        n.step()
    monkeypatch.setattr(store, "notify_done", real)
    make(store, clock, outbox).step()
    assert outbox.kinds() == ["raised", "raised"]
    assert outbox.sent[0][1].id == outbox.sent[1][1].id  # a receiver can drop the repeat


class Ledger:
    def __init__(self, leads: bool) -> None:
        self.lead, self.keys = leads, set()

    def leads(self) -> bool:
        return self.lead

    def notified(self, channel: str, key: str) -> bool:
        return (channel, key) in self.keys

    def mark_notified(self, channel: str, keys: list[str]) -> None:
        self.keys.update((channel, k) for k in keys)


def test_with_several_hubs_only_the_leader_sends_and_the_next_one_skips_what_was_sent(store, tmp_path):
    clock, outbox = Clock(), Outbox()
    ledger = Ledger(leads=False)
    follower = make(store, clock, outbox, ledger=ledger)
    store.record_alerts([event("raised", alert="a"), event("raised", alert="b")], T0 + 10)
    clock.t = T0 + 11
    follower.step()
    assert outbox.sent == [] and follower.status()[0]["waiting"] == 2
    (key,) = [k for k in store.notify_keys("phone", 0) if '"a"' in k]
    ledger.keys.add(("phone", key))  # the leader sent "a" and recorded it through Raft
    follower.step()
    assert follower.status()[0]["waiting"] == 1
    ledger.lead = True  # a fail-over: this hub leads now
    follower.step()
    assert [m.fields["alert"] for _, m in outbox.sent] == ["b"]
    assert any('"b"' in k for _, k in ledger.keys)


def test_the_test_button_sends_now_and_names_an_unknown_channel(store):
    clock, outbox = Clock(), Outbox()
    n = make(store, clock, outbox, config("phone"), config("mail"))
    assert [(o["channel"], o["ok"]) for o in n.test()] == [("phone", True), ("mail", True)]
    outbox.fail = [Permanent("HTTP 404 Not Found")]
    assert n.test("phone") == [{"channel": "phone", "ok": False, "result": "permanent: HTTP 404 Not Found"}]
    with pytest.raises(KeyError, match="configured: phone, mail"):
        n.test("pager")
