"""Alert notifications end to end, against real local receivers: a webhook (every signature
verified), an ntfy server (http.server) and a mail server (aiosmtpd).

A room pinned hot from the REPL gives each channel one "raised", the operator's acknowledgement
one "acknowledged" and the release one "resolved"; a receiver failing three times gets the
message once after the backoff; a hub SIGKILLed between a send and its record sends it again
with the same X-Harvester-Id (at-least-once: the receiver can drop it); a storm of 200 alerts
is capped at 20 messages; `harvester notify test` and `harvester health` show each channel."""

from __future__ import annotations

import email
import email.header
import email.policy
import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from actors.cli.main import main
from actors.client import connect
from actors.hub.channels import verify_signature
from actors.hub.notify import describe
from tests.cluster.conftest import ProcCluster
from tests.helpers import HOST, free_port, wait_for
from tests.integration.conftest import start_room_plugin_node
from tests.integration.web_client import Web

try:
    from aiosmtpd.controller import Controller
except ImportError:  # pragma: no cover - the test extra installs it
    Controller = None  # type: ignore[assignment,misc]

SECRET = "hmac-key-for-the-test"
RESET = "reset"  # a scripted answer: close the connection with a TCP reset instead of answering


# --- receivers ----------------------------------------------------------------------------------


@dataclass
class Post:
    t: float  # when it arrived (epoch s)
    path: str
    headers: Any  # email.message.Message: case-insensitive
    body: bytes
    answer: int | str  # the status answered, or RESET

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def id(self) -> str:
        return self.headers.get("X-Harvester-Id", "")

    @property
    def title(self) -> str:  # ntfy: the Title header, RFC 2047 decoded
        return str(email.header.make_header(email.header.decode_header(self.headers.get("Title", ""))))


class Receiver:
    """A local HTTP server recording every POST. Answers come from `script` (one entry a request:
    a status or RESET), then `status`. With `hold` set, the first POST is recorded, `holding` is
    set, and the answer waits until `hold` is set too (the client may be gone by then)."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.script: list[int | str] = []
        self.status = 200
        self.hold: threading.Event | None = None
        self.holding = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    answer = receiver.script.pop(0) if receiver.script else receiver.status
                    first = not receiver.posts
                    receiver.posts.append(Post(time.time(), self.path, self.headers, body, answer))
                self.close_connection = True
                if first and receiver.hold is not None:
                    receiver.holding.set()
                    receiver.hold.wait(60)
                try:
                    if answer == RESET:
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        self.connection.close()
                        return
                    reply = b'{"id":"n1","event":"message"}' if answer == 200 else b"not now"
                    self.send_response(int(answer))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass  # the hub that asked is gone (SIGKILLed while we held the answer)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a reset or a dead client is what some tests want

        self.server = Server((HOST, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def delivered(self) -> list[Post]:
        """The POSTs answered 2xx."""
        with self._lock:
            return [p for p in self.posts if isinstance(p.answer, int) and 200 <= p.answer < 300]

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Mailbox:
    """An aiosmtpd handler keeping every message it accepted."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 2.0.0 Ok: queued"


@pytest.fixture
def hook() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def phone() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    if Controller is None:
        pytest.skip("aiosmtpd is not installed (pip install aiosmtpd)")
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname=HOST, port=port, server_hostname="mx.test")
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def notify_toml(*channels: dict[str, Any]) -> str:
    """[[notify]] tables (JSON strings and lists are valid TOML values)."""
    lines: list[str] = []
    for channel in channels:
        lines.append("[[notify]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in channel.items()]
    return "\n".join(lines) + "\n"


def webhook(receiver: Receiver, name: str = "hook", **kw: Any) -> dict[str, Any]:
    return {"name": name, "kind": "webhook", "url": receiver.url(), "timeout": 10, **kw}


def start_hub(cluster_factory, *channels: dict[str, Any]):
    cluster = cluster_factory(free_port(), extra=notify_toml(*channels))
    wait_for(lambda: cluster.hub.registrar.sweeps > 0, what="hub registered its names")
    return cluster


def hub_event(alert: str, ts: float, state: str = "raised", severity: str = "warning") -> dict[str, Any]:
    """An alert event as the hub's own plugins record them."""
    return {"plugin": "storm", "version": "1.0.0", "alert": alert, "state": state, "severity": severity, "node": "hub",
            "message": f"{alert} is off", "sensor": "monitor", "quantity": "cpu_load", "value": 97.0,
            "ts": ts, "since": ts}


def idle(notifier: Any, **sent: int) -> bool:
    """Every channel has nothing waiting and has sent what is given (name=count)."""
    status = {s["name"]: s for s in notifier.status()}
    return all(s["waiting"] == 0 for s in status.values()) and all(status[n]["sent"] == k for n, k in sent.items())


# --- 1. the whole path --------------------------------------------------------------------------


def ntfy_kind(post: Post) -> str:
    tags = post.headers.get("Tags", "").split(",")
    return {"warning": "raised", "ok_hand": "acknowledged", "white_check_mark": "resolved"}.get(tags[0], tags[0])


def test_a_hot_room_reaches_webhook_ntfy_and_email_once_per_state_change(cluster_factory, tmp_path, hook,
                                                                         phone, mailbox):
    box, smtp_port = mailbox
    secret = tmp_path / "hook.secret"
    secret.write_text(SECRET + "\n")
    cluster = start_hub(cluster_factory,
                        webhook(hook, secret_file=str(secret)),
                        {"name": "phone", "kind": "ntfy", "url": phone.url("/greenhouse"), "timeout": 10},
                        {"name": "mail", "kind": "email", "host": HOST, "port": smtp_port, "security": "none",
                         "from": "Harvester <hub@example.org>", "to": ["ops@example.org"], "timeout": 10})
    notifier = cluster.hub.role.notifier
    start_room_plugin_node(cluster, tmp_path / "plugins")
    fleet = connect(HOST, cluster.ns_port)  # as a user at the REPL
    room = fleet["pi4"]["room"]

    def each_got(n: int) -> bool:
        return len(hook.delivered()) >= n and len(phone.delivered()) >= n and len(box.messages) >= n

    room.pin(temperature=35)
    wait_for(lambda: each_got(1), timeout=60, what="a raised message on each channel")
    alert = cluster.hub.role.hub.alerts()[0]
    raised = hook.delivered()[0].json()
    assert raised["kind"] == "raised" and raised["severity"] == "warning" and raised["version"] == 1
    assert {k: raised["fields"][k] for k in ("node", "plugin", "alert", "severity")} == \
        {"node": "pi4", "plugin": "room_temperature", "alert": alert["alert"], "severity": "warning"}
    assert raised["fields"]["value"] == 35.0 and raised["hub"] == "hub"
    title = raised["title"]
    assert title.startswith("pi4: temperature 35") and "above 30" in title, title
    ntfy = phone.delivered()[0]
    assert ntfy.path == "/greenhouse" and ntfy.title == title
    assert ntfy.headers["X-Priority"] == "4" and ntfy.headers["Tags"] == "warning,pi4"  # warning: high
    mail = box.messages[0]
    assert mail["Subject"] == title and mail["X-Harvester-Kind"] == "raised" and mail["To"] == "ops@example.org"

    operator = Web(cluster.web_port, cluster.hub.role.tokens.data()["operator"])
    status, body = operator.post(f"/api/alerts/{alert['id']}/ack", {})
    assert status == 200 and body["alert"]["acked_by"] == "operator", body
    wait_for(lambda: each_got(2), timeout=60, what="an acknowledged message on each channel")

    room.release()
    wait_for(lambda: each_got(3), timeout=60, what="a resolved message on each channel")
    # nothing more is owed (no reminders configured, the episode is over): once the queue is
    # empty and each channel counts its three, the receivers hold all there will be
    wait_for(lambda: idle(notifier, hook=3, phone=3, mail=3), what="the queue empty, three sent each")

    hooks = hook.posts
    assert [p.json()["kind"] for p in hooks] == ["raised", "acknowledged", "resolved"]
    assert all(p.answer == 200 for p in hooks)
    for p in hooks:  # every body signed, and its id the header's
        assert verify_signature(SECRET, p.body, p.headers["X-Harvester-Signature"]), p.body
        assert p.json()["id"] == p.id and p.id.startswith("hub:hook:")
    assert len({p.id for p in hooks}) == 3
    acked, resolved = hooks[1].json(), hooks[2].json()
    assert "acknowledged by operator" in acked["body"] and acked["fields"]["acked_by"] == "operator"
    assert "resolved after" in resolved["body"] and resolved["title"].startswith("resolved: pi4:")

    assert [ntfy_kind(p) for p in phone.posts] == ["raised", "acknowledged", "resolved"]
    assert [p.headers["X-Priority"] for p in phone.posts] == ["4", "3", "3"]  # good news wakes nobody
    assert "acknowledged by operator" in phone.posts[1].body.decode()
    assert "resolved after" in phone.posts[2].body.decode()
    assert len({p.title for p in phone.posts}) == 3

    assert [m["X-Harvester-Kind"] for m in box.messages] == ["raised", "acknowledged", "resolved"]
    assert len({m["Message-ID"] for m in box.messages}) == len({m["X-Harvester-Id"] for m in box.messages}) == 3
    assert "acknowledged by operator" in box.messages[1].get_content()
    assert "resolved after" in box.messages[2].get_content()
    assert [m["Subject"] for m in box.messages] == [p.json()["title"] for p in hooks]


# --- 2. a receiver failing three times ----------------------------------------------------------


def channels_cli(ns: str, capsys) -> dict[str, Any]:
    assert main(["notify", "channels", "--ns", ns]) == 0
    return {c["name"]: c for c in json.loads(capsys.readouterr().out)}


def test_a_receiver_failing_three_times_gets_the_message_once_after_the_backoff(cluster_factory, hook, capsys):
    hook.script = [503, 503, RESET]
    cluster = start_hub(cluster_factory, webhook(hook))
    notifier, ns = cluster.hub.role.notifier, f"{HOST}:{cluster.ns_port}"
    cluster.hub.role.hub.record_alerts("hub", [hub_event("cpu-hot", time.time())])

    wait_for(lambda: notifier.status()[0]["last_error"], timeout=30, what="the first attempt to fail")
    failing = channels_cli(ns, capsys)["hook"]  # the next attempt is ≥ 0.8 s away: still failing
    assert failing["sent"] == 0 and failing["waiting"] == 1 and failing["error_since"], failing
    assert "HTTP 503" in failing["last_error"] or "connection lost" in failing["last_error"], failing
    wait_for(lambda: hook.delivered(), timeout=30, what="the fourth attempt to go through")
    wait_for(lambda: idle(notifier, hook=1), what="the message recorded as sent")

    posts = hook.posts
    assert [p.answer for p in posts] == [503, 503, RESET, 200]
    assert len({p.id for p in posts}) == 1 and posts[0].json()["kind"] == "raised"  # one message, retried
    gaps = [b.t - a.t for a, b in zip(posts, posts[1:], strict=False)]
    # backoff 1 s, 2 s, 4 s, each times 0.8..1.0 (jitter), on the channel's 0.5 s loop
    for gap, backoff in zip(gaps, (1.0, 2.0, 4.0), strict=True):
        assert 0.8 * backoff - 0.3 <= gap <= backoff + 2.5, gaps
    assert posts[-1].t - posts[0].t < 15, gaps
    after = channels_cli(ns, capsys)["hook"]
    assert after["last_error"] is None and after["error_since"] is None and after["sent"] == 1, after
    assert describe(after) == "notify hook (webhook): 1 sent"


# --- 3. a hub SIGKILLed between the send and its record -----------------------------------------


def push_alert(ns_port: int, seq: int, alert: str) -> None:
    """What a spoke does when its plugin raises an alert: a batch carrying the event, pushed until
    the hub acknowledges it (a batch is idempotent on its node and seq, as the spoke's retries are)."""
    event = {"plugin": "room_temperature", "version": "1.0.0", "alert": alert, "state": "raised",
             "severity": "critical", "node": "pi4", "message": f"{alert}: too hot", "sensor": "dht22",
             "quantity": "temperature", "value": 35.0, "ts": time.time()}
    batch = {"node": "pi4", "seq": seq, "readings": [], "alerts": [event]}
    wait_for(lambda: connect(HOST, ns_port)["hub"]["aggregator"].push([batch], time.time())["acked"] == [seq],
             what=f"the hub to take batch {seq}")


@pytest.mark.slow
def test_a_hub_killed_between_send_and_record_sends_the_same_id_again_and_then_nothing(tmp_path: Path, hook):
    hook.hold = threading.Event()
    procs = ProcCluster(tmp_path, free_port(), free_port())
    try:
        hub = procs.add("hub", "hub", sensors=[{"name": "monitor", "kind": "monitor", "interval": 1.0}],
                        extra=notify_toml(webhook(hook, timeout=60)))
        wait_for(lambda: connect(HOST, procs.ns_port)["hub"]["notify"].channels(), timeout=60, interval=0.5,
                 what="the hub process up with its channel")
        push_alert(procs.ns_port, 1, "room_temperature.pi4.dht22")
        wait_for(hook.holding.is_set, timeout=30, what="the webhook POST, held unanswered")
        hub.kill()  # SIGKILL: the receiver has the message, the hub never recorded it as sent
        hook.hold.set()  # the answer goes to a dead socket
        hub.start()
        wait_for(lambda: len(hook.posts) >= 2, timeout=60, interval=0.2, what="the restarted hub to send again")
        first, again = hook.posts[:2]
        assert again.id == first.id and again.answer == 200  # at-least-once; the id lets the receiver drop it
        a, b = first.json(), again.json()
        assert {k: v for k, v in a.items() if k != "sent"} == {k: v for k, v in b.items() if k != "sent"}
        assert b["sent"] > a["sent"]

        # then nothing more for that alert state: a second alert's message is queued after it, so
        # once that one arrived the restarted hub has passed every tick that could resend the first
        push_alert(procs.ns_port, 2, "room_humidity.pi4.dht22")
        wait_for(lambda: any(p.json()["fields"]["alert"] == "room_humidity.pi4.dht22" for p in hook.posts[2:]),
                 timeout=30, what="the second alert's message")
        notify = connect(HOST, procs.ns_port)["hub"]["notify"]
        wait_for(lambda: notify.channels()[0]["waiting"] == 0, what="nothing waiting at the hub")
        ids = Counter(p.id for p in hook.posts)
        assert ids[first.id] == 2 and len(ids) == 2 and len(hook.posts) == 3, ids
        assert hook.posts[2].json()["fields"]["alert"] == "room_humidity.pi4.dht22"
    finally:
        procs.stop()


# --- 4. a storm -------------------------------------------------------------------------------------


def test_a_storm_of_200_alerts_sends_20_and_counts_180_suppressed(cluster_factory, hook):
    cluster = start_hub(cluster_factory, webhook(hook, rate_per_hour=20))
    hub, notifier = cluster.hub.role.hub, cluster.hub.role.notifier
    for batch in range(10):  # 200 alerts within seconds, as 10 pushes of 20 would bring them
        now = time.time()
        hub.record_alerts("hub", [hub_event(f"storm-{batch * 20 + i}", now + i / 1000) for i in range(20)])
    wait_for(lambda: notifier.status()[0]["suppressed"] == 180 and idle(notifier, hook=20), timeout=60,
             what="20 sent and 180 suppressed")
    assert len(hook.posts) == 20 and len({p.id for p in hook.posts}) == 20
    assert {p.json()["kind"] for p in hook.posts} == {"raised"}
    status = notifier.status()[0]
    assert "20 sent, 180 suppressed by the rate cap" in describe(status)
    assert hub.store.notify_suppressed("hook") == 180  # what the summary will say
    # The "180 more alert messages were suppressed" summary goes out once the hour has room again:
    # tests/unit/test_notify.py (test_a_storm_of_200_alerts_is_capped_with_one_summary) covers it
    # with an injected clock; nobody waits an hour here.


# --- 5. the test button and health --------------------------------------------------------------------


def test_notify_test_sends_on_every_channel_and_names_a_refusing_one(cluster_factory, hook, phone, capsys):
    cluster = start_hub(cluster_factory, webhook(hook),
                        {"name": "phone", "kind": "ntfy", "url": phone.url("/greenhouse"), "timeout": 10})
    ns = f"{HOST}:{cluster.ns_port}"
    assert main(["notify", "test", "--ns", ns]) == 0
    out = capsys.readouterr().out
    assert "hook: sent: HTTP 200" in out and "phone: sent: HTTP 200" in out, out
    assert [p.json()["kind"] for p in hook.posts] == ["test"]
    assert len(phone.posts) == 1 and phone.posts[0].headers["Tags"] == "test_tube"

    phone.status = 401
    assert main(["notify", "test", "--ns", ns]) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("phone:"))
    assert "NOT sent" in line and "HTTP 401" in line, out
    assert "hook: sent: HTTP 200" in out
    assert main(["notify", "test", "hook", "--ns", ns]) == 0  # one channel only
    assert len(hook.posts) == 3 and len(phone.posts) == 2

    assert main(["health", "--ns", ns, "--node", "hub", "--wait", "--timeout", "30", "--quiet"]) == 0
    out = capsys.readouterr().out
    lines = [x.strip() for x in out.splitlines() if x.strip().startswith("notify ")]
    assert lines == ["notify hook (webhook): 0 sent", "notify phone (ntfy): 0 sent"], out
