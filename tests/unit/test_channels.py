"""The notification senders against real local receivers: ntfy and webhook (http.server), email
(aiosmtpd), apprise (a fake `apprise` on PATH); status and error mapping, signatures, cleaning."""

from __future__ import annotations

import email
import email.header
import email.policy
import email.utils
import json
import os
import socket
import ssl
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from actors.hub import channels
from actors.hub.channels import Channel, Message, Permanent, Transient, deliver, verify_signature
from tests.helpers import HOST, free_port

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError:  # pragma: no cover - the test extra installs it
    Controller = None  # type: ignore[assignment,misc]

needs_smtpd = pytest.mark.skipif(Controller is None, reason="aiosmtpd is not installed (pip install aiosmtpd)")


def msg(**changes: Any) -> Message:
    base: dict[str, Any] = dict(
        id="m-1", kind="raised", severity="critical", title="pi4: room too hot (31.2 °C)",
        body="temperature 31.2 °C, above 30 °C\nsince 10:02",
        fields={"node": "pi4", "sensor": "bme680", "quantity": "temperature", "value": 31.2, "alert": "hot"},
        ts=1_712_345_678.25)
    base.update(changes)
    return Message(**base)


def decode_header(value: str) -> str:
    return str(email.header.make_header(email.header.decode_header(value)))


# --- an HTTP receiver ---------------------------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: Any  # email.message.Message: case-insensitive, get_all
    body: bytes


class Receiver:
    """A local HTTP server that records each POST and answers with `status`, `headers`, `reply`."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Request] = []
        self.status = 200
        self.headers: dict[str, str] = {}
        self.reply = b'{"id":"abc123","event":"message"}'
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append(Request(self.path, self.headers, body))
                self.send_response(receiver.status)
                for key, value in receiver.headers.items():
                    self.send_header(key, value)
                reply = b"" if receiver.status == 204 else receiver.reply
                self.send_header("Content-Length", str(len(reply)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def url(self, path: str = "/greenhouse", scheme: str = "http") -> str:
        return f"{scheme}://{HOST}:{self.port}{path}"

    @property
    def last(self) -> Request:
        assert self.requests, "the receiver got no request"
        return self.requests[-1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers: a hung receiver."""
    with socket.create_server((HOST, 0), backlog=8) as s:
        yield s.getsockname()[1]


def ntfy(url: str, **kw: Any) -> Channel:
    return Channel("phone", "ntfy", url=url, **{"timeout": 5.0, **kw})


def webhook(url: str, **kw: Any) -> Channel:
    return Channel("hook", "webhook", url=url, **{"timeout": 5.0, "hub": "hub1", **kw})


# --- ntfy ---------------------------------------------------------------------------------------


def test_ntfy_posts_body_with_title_priority_tags_and_token(receiver):
    receipt = deliver(ntfy(receiver.url(), token="tk_abc123"), msg())
    assert receipt == "HTTP 200 id=abc123"
    req = receiver.last
    assert req.path == "/greenhouse"
    assert req.body.decode("utf-8") == "temperature 31.2 °C, above 30 °C\nsince 10:02"
    assert req.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert decode_header(req.headers["Title"]) == "pi4: room too hot (31.2 °C)"
    assert req.headers["Title"].startswith("=?UTF-8?B?")  # not ASCII: RFC 2047, never raw bytes
    assert req.headers["X-Priority"] == "5"
    assert req.headers["Tags"] == "rotating_light,pi4"
    assert req.headers["Authorization"] == "Bearer tk_abc123"
    assert req.headers["Priority"] is None  # Cloudflare's RFC 9218 header would collide with it


def test_ntfy_without_token_sends_no_authorization_and_ascii_title_verbatim(receiver):
    deliver(ntfy(receiver.url()), msg(title="pi4: door open", fields={}))
    req = receiver.last
    assert req.headers["Authorization"] is None
    assert req.headers["Title"] == "pi4: door open"
    assert req.headers["Tags"] == "rotating_light"


@pytest.mark.parametrize(("kind", "severity", "priority", "tags"), [
    ("raised", "critical", "5", "rotating_light,pi4"),
    ("raised", "warning", "4", "warning,pi4"),
    ("raised", "info", "3", "information_source,pi4"),
    ("reminder", "critical", "5", "rotating_light,alarm_clock,pi4"),
    ("acknowledged", "critical", "3", "ok_hand,pi4"),
    ("resolved", "critical", "3", "white_check_mark,pi4"),
    ("resolved", "info", "3", "white_check_mark,pi4"),
    ("digest", "warning", "3", "memo,pi4"),
    ("suppressed", "critical", "3", "mute,pi4"),
    ("test", "info", "3", "test_tube,pi4"),
])
def test_ntfy_priority_and_tags_follow_severity_and_kind(receiver, kind, severity, priority, tags):
    deliver(ntfy(receiver.url()), msg(kind=kind, severity=severity))
    assert receiver.last.headers["X-Priority"] == priority
    assert receiver.last.headers["Tags"] == tags


def test_ntfy_node_tag_cannot_add_tags_or_headers(receiver):
    deliver(ntfy(receiver.url()), msg(fields={"node": "pi4,urgent\r\nX-Evil: 1"}))
    assert receiver.last.headers["Tags"] == "rotating_light,pi4_urgent__X-Evil__1"
    assert receiver.last.headers["X-Evil"] is None


def test_url_credentials_become_basic_auth_and_leave_the_url(receiver):
    url = receiver.url().replace("http://", "http://alice:p%40ss@")
    deliver(ntfy(url), msg())
    req = receiver.last
    assert req.path == "/greenhouse"
    assert req.headers["Authorization"] == "Basic " + __import__("base64").b64encode(b"alice:p@ss").decode()


def test_non_ascii_topics_are_percent_encoded(receiver):
    deliver(ntfy(receiver.url("/grüne haus")), msg())
    assert receiver.last.path == "/gr%C3%BCne%20haus"


def test_titles_cannot_inject_headers(receiver):
    evil = "pi4: hot\r\nX-Evil: 1\r\n\r\nsmuggled\u2028line\ttab"
    deliver(ntfy(receiver.url()), msg(title=evil))
    req = receiver.last
    assert req.headers["X-Evil"] is None
    assert req.headers["Title"] == "pi4: hot X-Evil: 1 smuggled line tab"
    assert req.body.decode().startswith("temperature")


def test_message_ids_cannot_inject_headers(receiver):
    deliver(webhook(receiver.url("/hook")), msg(id="m-1\r\nX-Evil: 1"))
    req = receiver.last
    assert req.headers["X-Evil"] is None
    assert req.headers["X-Harvester-Id"] == "m-1%0D%0AX-Evil%3A%201"
    assert json.loads(req.body)["id"] == "m-1\r\nX-Evil: 1"  # the JSON keeps it exactly


def test_long_bodies_and_titles_are_bounded_without_splitting_characters(receiver):
    deliver(ntfy(receiver.url()), msg(title="é" * 500, body="é" * 5000))
    body = receiver.last.body
    assert len(body) <= channels.MAX_BODY
    assert body.decode("utf-8").endswith("…")  # valid UTF-8: no character cut in half
    title = decode_header(receiver.last.headers["Title"])
    assert len(title) == channels.MAX_TITLE and title.endswith("…")


# --- webhook ------------------------------------------------------------------------------------


def test_webhook_posts_the_json_contract_signed(receiver):
    fields = {"node": "pi4", "value": 31.2, "bad": float("nan"), "path": Path("/x"), "pair": (1, 2)}
    receipt = deliver(webhook(receiver.url("/hook"), secret="s3cret"), msg(fields=fields))
    assert receipt == "HTTP 200"
    req = receiver.last
    assert req.path == "/hook"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-Harvester-Id"] == "m-1"
    doc = json.loads(req.body)
    assert set(doc) == {"version", "id", "kind", "severity", "title", "body", "ts", "sent", "hub", "fields"}
    assert doc["version"] == 1
    assert (doc["id"], doc["kind"], doc["severity"], doc["hub"]) == ("m-1", "raised", "critical", "hub1")
    assert doc["title"] == "pi4: room too hot (31.2 °C)"
    assert doc["body"] == "temperature 31.2 °C, above 30 °C\nsince 10:02"
    assert doc["ts"] == 1_712_345_678.25
    assert isinstance(doc["sent"], float)
    assert doc["fields"] == {"node": "pi4", "value": 31.2, "bad": None, "path": "/x", "pair": [1, 2]}
    signature = req.headers["X-Harvester-Signature"]
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify_signature("s3cret", req.body, signature)
    assert not verify_signature("wrong", req.body, signature)
    assert not verify_signature("s3cret", req.body.replace(b"31.2", b"13.2"), signature)


def test_webhook_without_secret_is_unsigned_and_hub_may_be_null(receiver):
    deliver(Channel("hook", "webhook", url=receiver.url("/hook")), msg())
    assert receiver.last.headers["X-Harvester-Signature"] is None
    assert json.loads(receiver.last.body)["hub"] is None


def test_webhook_id_is_the_same_on_every_retry(receiver):
    receiver.status = 503
    with pytest.raises(Transient):
        deliver(webhook(receiver.url("/hook")), msg())
    receiver.status = 200
    deliver(webhook(receiver.url("/hook")), msg())
    first, second = receiver.requests
    assert first.headers["X-Harvester-Id"] == second.headers["X-Harvester-Id"] == "m-1"
    assert json.loads(first.body)["id"] == json.loads(second.body)["id"] == "m-1"


@pytest.mark.parametrize(("header", "ok"), [
    (channels.sign("k", b"{}"), True),
    (channels.sign("k", b"{}").upper().replace("SHA256=", "sha256="), True),  # hex case does not matter
    (" " + channels.sign("k", b"{}") + " ", True),
    (channels.sign("k", b"{}").replace("sha256", "sha1"), False),
    (channels.sign("k", b"{} "), False),
    ("sha256=", False), ("", False), ("garbage", False), ("sha256=é", False),
])
def test_verify_signature(header, ok):
    assert verify_signature("k", b"{}", header) is ok
    assert verify_signature("", b"{}", header) is False  # no secret: nothing verifies


# --- status mapping (ntfy and webhook) -----------------------------------------------------------

BOTH = pytest.mark.parametrize("make", [ntfy, webhook], ids=["ntfy", "webhook"])


@BOTH
@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_delivered(receiver, make, status):
    receiver.status = status
    assert deliver(make(receiver.url()), msg()).startswith(f"HTTP {status}")


@BOTH
@pytest.mark.parametrize(("status", "words"), [
    (400, "HTTP 400 Bad Request"), (401, "check the token"), (403, "HTTP 403"), (404, "check the URL"),
    (413, "too large"), (422, "HTTP 422"),
])
def test_other_4xx_is_permanent_with_status_and_excerpt(receiver, make, status, words):
    receiver.status = status
    receiver.reply = b'{"code":40101,"http":401,"error":"unauthorized"}\n' + b"x" * 5000
    with pytest.raises(Permanent) as info:
        deliver(make(receiver.url()), msg())
    assert words in info.value.reason
    assert f"{HOST}: HTTP {status}" in info.value.reason
    assert '"error":"unauthorized"' in info.value.reason
    assert len(info.value.reason) < 400  # an excerpt, not the whole answer
    assert "greenhouse" not in info.value.reason  # the topic (a secret on ntfy.sh) is not logged


@BOTH
@pytest.mark.parametrize(("status", "retry_after", "expected"), [
    (408, None, None), (425, None, None), (429, "7", 7.0), (429, None, None), (500, None, None),
    (502, None, None), (503, "120", 120.0), (504, None, None),
])
def test_408_429_5xx_are_transient_and_honour_retry_after(receiver, make, status, retry_after, expected):
    receiver.status = status
    if retry_after:
        receiver.headers["Retry-After"] = retry_after
    with pytest.raises(Transient) as info:
        deliver(make(receiver.url()), msg())
    assert f"HTTP {status}" in info.value.reason
    assert info.value.retry_after == expected


@BOTH
def test_redirects_are_not_followed(receiver, make):
    receiver.status = 301
    receiver.headers["Location"] = f"http://{HOST}:{receiver.port}/elsewhere?token=x"
    with pytest.raises(Permanent) as info:
        deliver(make(receiver.url()), msg())
    assert "HTTP 301" in info.value.reason and "redirected" in info.value.reason
    assert "token=x" not in info.value.reason
    assert len(receiver.requests) == 1  # no GET to the new place


@BOTH
def test_connection_refused_is_transient(make):
    port = free_port()
    with pytest.raises(Transient) as info:
        deliver(make(f"http://{HOST}:{port}/t"), msg())
    assert "connection refused" in info.value.reason and f"{HOST}:{port}" in info.value.reason


@BOTH
def test_a_receiver_that_never_answers_is_transient(make, silent_port):
    with pytest.raises(Transient) as info:
        deliver(make(f"http://{HOST}:{silent_port}/t", timeout=0.3), msg())
    assert "no answer within 0.3 s" in info.value.reason


@BOTH
def test_dns_failure_is_transient(make, monkeypatch):
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(Transient) as info:
        deliver(make("https://ntfy.invalid/topic"), msg())
    assert "cannot resolve ntfy.invalid" in info.value.reason


def test_retry_after_forms(monkeypatch):
    monkeypatch.setattr(channels.time, "time", lambda: 1_000_000_000.0)  # 2001-09-09T01:46:40Z
    assert channels._retry_after("120") == 120.0
    assert channels._retry_after(" 2.5 ") == 2.5
    assert channels._retry_after("-5") == 0.0
    assert channels._retry_after("1e12") == channels.MAX_RETRY_AFTER_S
    assert channels._retry_after("Sun, 09 Sep 2001 01:47:40 GMT") == 60.0
    assert channels._retry_after("Sun, 09 Sep 2001 01:40:00 GMT") == 0.0  # already past
    for junk in (None, "", "soon", "nan", "inf"):
        assert channels._retry_after(junk) is None


# --- TLS with a private CA -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pytest.importorskip("cryptography", reason="the private CA for TLS tests needs cryptography")
    from actors.cli import certs

    root = certs.init_pki(tmp_path_factory.mktemp("pki") / "pki", [("mail", ["127.0.0.1"])], [])
    return root.ca_cert, root.node("mail")


def server_context(pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki[1].cert, pki[1].key)
    return ctx


def test_https_with_the_private_ca_and_without_it(pki):
    r = Receiver(tls=server_context(pki))
    try:
        assert deliver(ntfy(r.url(scheme="https"), ca=pki[0]), msg()).startswith("HTTP 200")
        with pytest.raises(Permanent) as info:  # the system's CAs do not know the private one
            deliver(webhook(r.url(scheme="https")), msg())
        assert "certificate not trusted" in info.value.reason
    finally:
        r.close()


# --- email --------------------------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler: records accepted messages, or answers MAIL/RCPT/DATA as told."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.mail_reply: str | None = None
        self.refuse: dict[str, str] = {}  # recipient -> reply
        self.data_reply: str | None = None

    async def handle_MAIL(self, server, session, envelope, address, options):  # noqa: N802
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.data_reply:
            return self.data_reply
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "login": session.auth_data, "tls": session.ssl is not None,
                              "email": email.message_from_bytes(envelope.content, policy=email.policy.default)})
        return "250 2.0.0 Ok: queued as 4F2A1"

    def last(self) -> dict[str, Any]:  # a method: aiosmtpd looks at every attribute of its handler
        assert self.messages, "the SMTP server got no message"
        return self.messages[-1]


def accept_hub(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"hub", b"s3cret")
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)  # 535 when not ok


@pytest.fixture
def smtpd() -> Iterator[Any]:
    """Start aiosmtpd servers on loopback: smtpd(**aiosmtpd options) -> (Mailbox, port)."""
    started: list[Any] = []

    def start(**options: Any) -> tuple[Mailbox, int]:
        box, port = Mailbox(), free_port()
        controller = Controller(box, hostname=HOST, port=port, server_hostname="mx.test", **options)
        controller.start()
        started.append(controller)
        return box, port
    yield start
    for controller in started:
        controller.stop()


def mail(port: int, **kw: Any) -> Channel:
    return Channel("mail", "email", **{"host": HOST, "port": port, "security": "none", "timeout": 5.0,
                                       "sender": "Harvester <hub@example.org>",
                                       "to": ("ops@example.org", "Bob <bob@example.org>"), **kw})


@needs_smtpd
def test_email_arrives_with_subject_addresses_stable_message_id_and_date(smtpd):
    box, port = smtpd()
    receipt = deliver(mail(port), msg())
    assert receipt == "250 2.0.0 Ok: queued as 4F2A1"
    got = box.last()
    assert got["from"] == "hub@example.org"
    assert got["to"] == ["ops@example.org", "bob@example.org"]
    m = got["email"]
    assert m["Subject"] == "pi4: room too hot (31.2 °C)"
    assert m["From"] == "Harvester <hub@example.org>"
    assert m["To"] == "ops@example.org, Bob <bob@example.org>"
    assert m["Message-ID"] == "<harvester.m-1@example.org>"
    assert email.utils.parsedate_to_datetime(m["Date"]).timestamp() == 1_712_345_678  # whole seconds
    assert m["Auto-Submitted"] == "auto-generated"
    assert (m["X-Harvester-Id"], m["X-Harvester-Kind"], m["X-Harvester-Severity"]) == ("m-1", "raised", "critical")
    assert (m["Importance"], m["X-Priority"]) == ("high", "1")
    assert m.get_content_type() == "text/plain"
    assert m.get_content().replace("\r\n", "\n").strip() == "temperature 31.2 °C, above 30 °C\nsince 10:02"
    # a resend is recognisably the same message; another message is not
    deliver(mail(port), msg())
    deliver(mail(port), msg(id="m-2", kind="resolved"))
    ids = [b["email"]["Message-ID"] for b in box.messages]
    assert ids[0] == ids[1] != ids[2]
    assert box.messages[2]["email"]["Importance"] is None


@needs_smtpd
def test_email_subject_cannot_inject_headers(smtpd):
    box, port = smtpd()
    deliver(mail(port), msg(title="hot\r\nBcc: everyone@example.org\nX-Evil: 1"))
    m = box.last()["email"]
    assert m["Bcc"] is None and m["X-Evil"] is None
    assert m["Subject"] == "hot Bcc: everyone@example.org X-Evil: 1"
    assert box.last()["to"] == ["ops@example.org", "bob@example.org"]


@needs_smtpd
def test_email_message_id_of_an_unusual_id_is_a_stable_hash(smtpd):
    box, port = smtpd()
    deliver(mail(port), msg(id="alert pi4/hot @ 10:02"))
    deliver(mail(port), msg(id="alert pi4/hot @ 10:02"))
    first, second = (b["email"]["Message-ID"] for b in box.messages)
    assert first == second
    assert first.startswith("<harvester.") and first.endswith("@example.org>") and " " not in first


@needs_smtpd
def test_email_login(smtpd):
    box, port = smtpd(authenticator=accept_hub, auth_require_tls=False)
    deliver(mail(port, username="hub", password="s3cret"), msg())
    assert box.last()["login"] == LoginPassword(b"hub", b"s3cret")


@needs_smtpd
def test_email_login_refused_535_is_permanent(smtpd):
    box, port = smtpd(authenticator=accept_hub, auth_require_tls=False)
    with pytest.raises(Permanent) as info:
        deliver(mail(port, username="hub", password="wrong"), msg())
    assert "login refused: 535" in info.value.reason
    assert "wrong" not in info.value.reason
    assert not box.messages


@needs_smtpd
def test_email_451_to_mail_is_transient(smtpd):
    box, port = smtpd()
    box.mail_reply = "451 4.3.0 Try again later"
    with pytest.raises(Transient) as info:
        deliver(mail(port), msg())
    assert "MAIL FROM refused: 451 4.3.0 Try again later" in info.value.reason


@needs_smtpd
def test_email_550_to_mail_is_permanent(smtpd):
    box, port = smtpd()
    box.mail_reply = "550 5.7.1 Sender not allowed"
    with pytest.raises(Permanent, match="MAIL FROM refused: 550"):
        deliver(mail(port), msg())


@needs_smtpd
def test_email_every_recipient_refused(smtpd):
    box, port = smtpd()
    box.refuse = {"ops@example.org": "550 5.1.1 No such user", "bob@example.org": "550 5.1.1 No such user"}
    with pytest.raises(Permanent) as info:
        deliver(mail(port), msg())
    assert "every recipient refused" in info.value.reason and "ops@example.org: 550" in info.value.reason
    box.refuse["bob@example.org"] = "450 4.2.0 Mailbox busy"  # one of them may work later
    with pytest.raises(Transient):
        deliver(mail(port), msg())


@needs_smtpd
def test_email_some_recipients_refused_is_delivered_to_the_others(smtpd):
    box, port = smtpd()
    box.refuse = {"bob@example.org": "550 5.1.1 No such user"}
    receipt = deliver(mail(port), msg())
    assert receipt.startswith("250 ") and receipt.endswith("refused: bob@example.org (550)")
    assert box.last()["to"] == ["ops@example.org"]


@needs_smtpd
@pytest.mark.parametrize(("reply", "error"), [("554 5.6.0 Message rejected", Permanent),
                                              ("452 4.3.1 Insufficient storage", Transient)])
def test_email_data_refused(smtpd, reply, error):
    box, port = smtpd()
    box.data_reply = reply
    with pytest.raises(error, match=r"message \(DATA\) refused: " + reply[:3]):
        deliver(mail(port), msg())


@needs_smtpd
def test_email_starttls_with_the_private_ca(smtpd, pki):
    box, port = smtpd(tls_context=server_context(pki), require_starttls=True, authenticator=accept_hub)
    deliver(mail(port, security="starttls", ca=pki[0], username="hub", password="s3cret"), msg())
    assert box.last()["tls"] and box.last()["login"] == LoginPassword(b"hub", b"s3cret")
    with pytest.raises(Permanent, match="certificate not trusted"):
        deliver(mail(port, security="starttls"), msg())


@needs_smtpd
def test_email_starttls_refuses_a_server_without_it(smtpd):
    box, port = smtpd()
    with pytest.raises(Permanent, match="does not offer STARTTLS"):
        deliver(mail(port, security="starttls"), msg())
    assert not box.messages


@needs_smtpd
def test_email_smtps(smtpd, pki):
    box, port = smtpd(ssl_context=server_context(pki))
    deliver(mail(port, security="ssl", ca=pki[0]), msg())
    assert box.last()["email"]["Message-ID"] == "<harvester.m-1@example.org>"


def test_email_connection_refused_and_silent_server_are_transient(silent_port):
    with pytest.raises(Transient, match="connection refused"):
        deliver(mail(free_port()), msg())
    with pytest.raises(Transient, match="no answer within 0.3 s"):
        deliver(mail(silent_port, timeout=0.3), msg())


def test_email_plain_text_only_to_loopback():
    with pytest.raises(Permanent, match="only to a loopback host"):
        deliver(mail(25, host="192.0.2.1"), msg())  # refused before any connection


def test_email_default_ports():
    assert Channel("m", "email", host="mx", sender="a@b.c", to=["d@e.f"]).where == "mx:587"
    assert Channel("m", "email", host="mx", sender="a@b.c", to=["d@e.f"], security="ssl").where == "mx:465"
    assert Channel("m", "email", host="mx", sender="a@b.c", to=["d@e.f"], port=2525).where == "mx:2525"


# --- apprise ------------------------------------------------------------------------------------

FAKE_APPRISE = """#!{python}
import json, os, sys, time
config = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), None)
record = {{"argv": sys.argv[1:], "pid": os.getpid()}}
if config:
    with open(config) as f:
        record["config"] = f.read()
    record["mode"] = os.stat(config).st_mode & 0o777
with open(os.environ["FAKE_APPRISE_RECORD"], "w") as f:
    json.dump(record, f)
sys.stderr.write(os.environ.get("FAKE_APPRISE_STDERR", ""))
sys.stderr.flush()
time.sleep(float(os.environ.get("FAKE_APPRISE_SLEEP", "0")))
sys.exit(int(os.environ.get("FAKE_APPRISE_EXIT", "0")))
"""
URLS = ("tgram://123456:SECRETBOTTOKEN/987", "mailto://user:hunter2@example.org")


class FakeApprise:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        script = bin_dir / "apprise"
        script.write_text(FAKE_APPRISE.format(python=sys.executable))
        script.chmod(0o755)
        self.record_path = tmp_path / "record.json"
        self.tmp = tmp_path / "tmp"  # where the URL file goes: checked empty after each run
        self.tmp.mkdir()
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        monkeypatch.setenv("FAKE_APPRISE_RECORD", str(self.record_path))
        monkeypatch.setattr(channels, "_apprise_in_python", lambda: False)
        monkeypatch.setattr(tempfile, "tempdir", str(self.tmp))

    def behave(self, exit: int = 0, stderr: str = "", sleep: float = 0) -> None:
        self.monkeypatch.setenv("FAKE_APPRISE_EXIT", str(exit))
        self.monkeypatch.setenv("FAKE_APPRISE_STDERR", stderr)
        self.monkeypatch.setenv("FAKE_APPRISE_SLEEP", str(sleep))

    @property
    def record(self) -> dict[str, Any]:
        return json.loads(self.record_path.read_text())


@pytest.fixture
def fake_apprise(tmp_path, monkeypatch) -> FakeApprise:
    return FakeApprise(tmp_path, monkeypatch)


def apprise(**kw: Any) -> Channel:
    return Channel("many", "apprise", urls=URLS, **{"timeout": 5.0, **kw})


def test_apprise_runs_the_cli_with_title_body_type_and_the_urls_in_a_private_file(fake_apprise):
    assert deliver(apprise(), msg()) == "apprise exit 0"
    rec = fake_apprise.record
    config = rec["argv"][3].removeprefix("--config=")
    assert rec["argv"] == ["--notification-type=failure", "--title=pi4: room too hot (31.2 °C)",
                           "--body=temperature 31.2 °C, above 30 °C\nsince 10:02", f"--config={config}"]
    assert rec["config"] == "".join(u + "\n" for u in URLS)
    assert rec["mode"] == 0o600
    assert not any("SECRET" in a or "hunter2" in a for a in rec["argv"])  # not in the process list
    assert Path(config).parent == fake_apprise.tmp and not any(fake_apprise.tmp.iterdir())  # removed
    assert "apprise" not in sys.modules  # never imported by the hub


@pytest.mark.parametrize(("kind", "severity", "expected"), [
    ("raised", "warning", "warning"), ("reminder", "info", "info"), ("resolved", "critical", "success"),
    ("acknowledged", "critical", "info"), ("test", "info", "info"),
])
def test_apprise_notification_type(fake_apprise, kind, severity, expected):
    deliver(apprise(), msg(kind=kind, severity=severity))
    assert fake_apprise.record["argv"][0] == f"--notification-type={expected}"


def test_apprise_body_starting_with_a_dash_and_title_with_line_breaks(fake_apprise):
    deliver(apprise(), msg(title="a\nb\r\n--config=/etc/passwd", body="--help"))
    argv = fake_apprise.record["argv"]
    assert argv[1] == "--title=a b --config=/etc/passwd" and argv[2] == "--body=--help"
    assert sum(a.startswith("--config=") for a in argv) == 1


def test_apprise_failure_is_transient_with_an_excerpt_without_secrets(fake_apprise):
    fake_apprise.behave(exit=1, stderr="ERROR - Failed to send Telegram notification to "
                                       "tgram://123456:SECRETBOTTOKEN/987: Bad Request\n")
    with pytest.raises(Transient) as info:
        deliver(apprise(), msg())
    reason = info.value.reason
    assert reason.startswith("apprise exit 1: ") and "Bad Request" in reason
    assert "SECRETBOTTOKEN" not in reason and "tgram://…" in reason
    assert not any(fake_apprise.tmp.iterdir())


@pytest.mark.parametrize(("code", "words"), [(2, "refused its arguments"), (3, "no service loaded")])
def test_apprise_usage_errors_are_permanent(fake_apprise, code, words):
    fake_apprise.behave(exit=code, stderr="Usage: apprise [OPTIONS] SERVER_URL")
    with pytest.raises(Permanent, match=words):
        deliver(apprise(), msg())


def test_apprise_that_hangs_is_killed_and_transient(fake_apprise, monkeypatch):
    monkeypatch.setattr(channels, "APPRISE_STARTUP_S", 0.0)
    fake_apprise.behave(sleep=30)
    with pytest.raises(Transient, match="did not finish within 0.5 s"):
        deliver(apprise(timeout=0.5), msg())
    assert not any(fake_apprise.tmp.iterdir())
    if fake_apprise.record_path.exists():  # it started before the deadline (slow machines may not)
        with pytest.raises(ProcessLookupError):
            os.kill(fake_apprise.record["pid"], 0)


def test_apprise_not_installed_is_permanent(tmp_path, monkeypatch):
    monkeypatch.setattr(channels, "_apprise_in_python", lambda: False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Permanent, match=r"apprise is not installed: pip install apprise"):
        deliver(apprise(), msg())


def test_apprise_in_the_hubs_interpreter_runs_its_cli_module(monkeypatch):
    monkeypatch.setattr(channels, "_apprise_in_python", lambda: True)
    command = channels.apprise_command()
    assert command[:2] == [sys.executable, "-c"] and "apprise.cli" in command[2]


# --- cleaning and channels ----------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "clean"), [
    ("pi4: hot", "pi4: hot"),
    ("  a\r\n\tb  \x00c\u2028d\x85e ", "a b c d e"),
    ("evil\u202ename", "evilname"),  # bidi overrides dropped
    ("bad \ud800 surrogate", "bad surrogate"),
    ("", "Harvester"), ("\r\n", "Harvester"),
])
def test_clean_title(raw, clean):
    assert channels.clean_title(raw) == clean


def test_clean_body():
    assert channels.clean_body("a\r\nb\rc\x00d\u2028e\tf\n\n") == "a\nb\ncd\ne\tf"
    long = channels.clean_body("€" * 2000)  # 6000 bytes
    assert len(long.encode()) <= channels.MAX_BODY and long.endswith("…")


def test_clean_message_falls_back_on_empty_title_and_body():
    m = channels.clean(msg(title="\n", body=""))
    assert m.title == "Harvester: raised" and m.body == "Harvester: raised"


def test_channel_checks_its_keys():
    with pytest.raises(ValueError, match="kind"):
        Channel("x", "pigeon")
    with pytest.raises(ValueError, match="url"):
        Channel("x", "ntfy")
    with pytest.raises(ValueError, match="url"):
        Channel("x", "webhook", url="file:///etc/passwd")
    with pytest.raises(ValueError, match="timeout"):
        Channel("x", "ntfy", url="https://ntfy.sh/t", timeout=0)
    with pytest.raises(ValueError, match="token"):
        Channel("x", "ntfy", url="https://ntfy.sh/t", token="tk\r\nX-Evil: 1")
    with pytest.raises(ValueError, match="to"):
        Channel("x", "email", host="mx", sender="a@b.c")
    with pytest.raises(ValueError, match="to"):
        Channel("x", "email", host="mx", sender="a@b.c", to=["a@b.c\r\nBcc: x@y.z"])
    with pytest.raises(ValueError, match="sender"):
        Channel("x", "email", host="mx", sender="nobody", to=["a@b.c"])
    with pytest.raises(ValueError, match="security"):
        Channel("x", "email", host="mx", sender="a@b.c", to=["a@b.c"], security="tls")
    with pytest.raises(ValueError, match="urls"):
        Channel("x", "apprise")
    c = Channel("x", "email", host="mx", sender="a@b.c", to=["a@b.c"], ca="/etc/ca.pem")  # type: ignore[arg-type]
    assert c.to == ("a@b.c",) and c.ca == Path("/etc/ca.pem")


def test_channel_repr_and_where_hide_secrets():
    channels_ = [Channel("a", "ntfy", url="https://ntfy.sh/secret-topic", token="tk_secret"),
                 Channel("b", "webhook", url="https://hooks.example.org/T0/secret", secret="k_secret"),
                 Channel("c", "email", host="mx", sender="a@b.c", to=["d@e.f"], password="pw_secret"),
                 Channel("d", "apprise", urls=["tgram://secret/1"])]
    for c in channels_:
        assert "secret" not in repr(c) and "secret" not in c.where
    assert [c.where for c in channels_] == ["ntfy.sh", "hooks.example.org", "mx:587", "1 Apprise URL"]

