"""The senders of hub notifications: one blocking function per channel kind, standard library only.

The notifier calls `deliver(channel, message)`; it returns a short receipt ("HTTP 200",
"250 2.0.0 Ok: queued as 4F2A1", "apprise exit 0") or raises `Permanent` (retrying cannot help:
a refused token, a wrong URL, a bad address; the reason says which) or `Transient` (try again
later: network down, timeout, HTTP 408/429/5xx, SMTP 4xx; `retry_after` in seconds when the
receiver said so). Nothing else is raised for a failed delivery. `deliver` blocks for up to
about `timeout` seconds per network operation: call it from a worker thread, never from an
event loop or a Pyro5 request.

Every message is cleaned first (`clean`): the title becomes one line of at most 200 characters
without control characters, the body at most 4096 bytes of UTF-8 (ntfy's own limit) with
`\\n` line ends; header values never carry CR or LF, so alert text cannot inject headers.

Channel keys (one `[[notify]]` table; the config parser reads secrets from their files):

    key        kinds     meaning
    name       all       the channel's name, for logs and the dashboard
    kind       all       "ntfy" | "webhook" | "email" | "apprise"
    timeout    all       seconds per network operation (connect, each read); default 10. apprise: the
                         whole run may take timeout + APPRISE_STARTUP_S (Python and Apprise's import
                         are slow on a Pi Zero)
    hub        all       the sending hub's name ("" = unknown): the webhook body's "hub"
    url        ntfy      the server URL including the topic, e.g. https://ntfy.sh/greenhouse
               webhook   the URL the JSON is POSTed to. http(s) only; user:password@ in either URL
                         becomes HTTP Basic auth
    token      ntfy      access token (from token_file), sent as `Authorization: Bearer`; "" = none
    secret     webhook   HMAC key (from secret_file); "" = unsigned
    ca         ntfy, webhook, email
                         a PEM CA file (private CA) trusted *instead of* the system's CAs; None = system
    host       email     the SMTP server
    port       email     0 = the security's standard port: 587 starttls, 465 ssl, 25 none
    security   email     "starttls" (refuses a server without STARTTLS) | "ssl" (SMTPS) | "none"
                         (plain text: only to a loopback host, e.g. a local relay or a test server)
    username   email     "" = no login
    password   email     (from password_file)
    sender     email     the From address (TOML key `from`), e.g. "Harvester <hub@example.org>"
    to         email     tuple of recipient addresses
    urls       apprise   tuple of Apprise URLs (from urls_file)

Secrets (url, token, secret, password, urls) are left out of the Channel's repr and of every
error message; errors name the host only.

ntfy: the body is POSTed as text/plain with `Title`, `X-Priority` and `Tags` headers (ntfy reads
both `Priority` and `X-Priority`; the `X-` form is used because proxies such as Cloudflare add an
RFC 9218 `Priority: u=…` header of their own). Priority: critical 5 (urgent), warning 4 (high),
info 3 (default); acknowledged, resolved, digest, suppressed and test messages are at most 3 —
good news should not wake anyone. Tags: an emoji by severity for raised (rotating_light, warning,
information_source) and for reminders (plus alarm_clock); ok_hand for acknowledged,
white_check_mark resolved, memo digest, mute suppressed, test_tube test; then the node's name as a
text tag. A non-ASCII title is sent RFC 2047 encoded (`=?UTF-8?B?…?=`), which ntfy ≥ 2.4 decodes.
ntfy has no de-duplication; no id header is sent.

Webhook: POST, `Content-Type: application/json`, UTF-8, this body (the contract, version 1):

    {
      "version": 1,                 # this layout; a new incompatible layout gets a new number
      "id": "…",                    # the message id: the same on every retry and after restarts.
                                    #   De-duplicate on it.
      "kind": "raised",             # raised | reminder | acknowledged | resolved | digest | suppressed | test
      "severity": "critical",       # info | warning | critical
      "title": "pi4: room too hot (31.2 °C)",   # one line, <= 200 characters
      "body": "…",                  # plain text, "\\n" line ends, <= 4096 bytes
      "ts": 1712345678.25,          # when the state change happened (epoch seconds)
      "sent": 1712345690.5,         # when this attempt was made (epoch seconds; differs per retry)
      "hub": "hub1",                # the sending hub's name, or null
      "fields": {"node": "pi4", "sensor": "bme680", "quantity": "temperature", "value": 31.2, …}
    }

`fields` holds what the notifier gives (JSON-safe: non-finite numbers become null, other objects
their str()). Headers: `X-Harvester-Id: <id>` and, with a secret, `X-Harvester-Signature:
sha256=<hex HMAC-SHA256 of the exact body bytes, keyed with the secret's UTF-8 bytes>`. A receiver
verifies the raw body bytes before parsing them (`verify_signature(secret, body, header)`, or the
same HMAC and a constant-time compare in any language). The signed body includes "sent", so a
receiver that also wants to refuse replays rejects a "sent" older than its window (e.g. 5 minutes)
and ids it has already seen; there is no separate timestamp header to sign.

Email: smtplib, STARTTLS / SMTPS / plain (loopback only), login when a username is given; the
message has Subject = title, From, To, Date = the message's ts, a stable
`Message-ID: <harvester.<id>@<sender's domain>>` (a resend is recognisably the same message),
`Auto-Submitted: auto-generated` (no vacation replies), X-Harvester-Id/-Kind/-Severity and, for
critical, `Importance: high` and `X-Priority: 1`. Recipients some of which refuse still count as
delivered (the receipt names the refused ones); a retry would repeat it to the others.

Apprise: the `apprise` CLI runs in a child process (never imported here: its import cost stays
out of the hub), as `python -c "from apprise.cli import main; main()"` with the hub's interpreter
when the module is installed there (the package has no `__main__`, so `-m apprise` cannot work),
else the `apprise` command on PATH. Its URLs go in a temporary 0600 config file (`--config`),
not on the command line, where every local user could read them in the process list. Exit 0 is
the receipt; exit 2 (bad arguments) and 3 (no services) are Permanent; anything else is
Transient with an excerpt of its output (Apprise cannot tell a permanent failure from a
transient one), the URLs masked.

HTTP status mapping (ntfy and webhook): 2xx delivered; 408, 425, 429, 5xx Transient (a
`Retry-After` in seconds or as an HTTP date is honoured, capped at a day); 3xx Permanent (the
redirect is not followed: a POST must not turn into a GET; configure the final URL); every
other status Permanent with the status and a short excerpt of the response body. Connection
refused or reset, timeouts, DNS failures Transient; an untrusted TLS certificate Permanent.

SMTP mapping: a 4xx reply Transient, 5xx Permanent (login refused, sender or every recipient
refused, message refused); STARTTLS or AUTH not offered Permanent; connection failures, a
dropped connection and timeouts Transient; an untrusted certificate Permanent.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.policy
import email.utils
import functools
import hashlib
import hmac
import http.client
import importlib.util
import ipaddress
import json
import math
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

KINDS = ("ntfy", "webhook", "email", "apprise")
MESSAGE_KINDS = ("raised", "reminder", "acknowledged", "resolved", "digest", "suppressed", "test")
SEVERITIES = ("info", "warning", "critical")
SECURITIES = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
MAX_TITLE = 200  # characters
MAX_BODY = 4096  # bytes of UTF-8 (ntfy turns a longer body into an attachment)
MAX_RETRY_AFTER_S = 86400.0
EXCERPT = 200  # characters of a response quoted in an error
RESPONSE_LIMIT = 64 * 1024  # bytes of a response read at most
APPRISE_STARTUP_S = 15.0  # added to an apprise channel's timeout: interpreter start and Apprise's import
WEBHOOK_VERSION = 1
USER_AGENT = "Harvester-hub"
ELLIPSIS = "…"

PRIORITY = {"critical": 5, "warning": 4, "info": 3}
CALM_KINDS = frozenset({"acknowledged", "resolved", "digest", "suppressed", "test"})  # at most priority 3
SEVERITY_TAG = {"critical": "rotating_light", "warning": "warning", "info": "information_source"}
KIND_TAG = {"acknowledged": "ok_hand", "resolved": "white_check_mark", "digest": "memo",
            "suppressed": "mute", "test": "test_tube"}
TRANSIENT_STATUS = frozenset({408, 425, 429})
# bidirectional overrides and isolates: they can make a title read differently from what it says
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\x85\u2028\u2029\x0b\x0c]")
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_MSGID_SAFE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\Z")
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]*\Z")
_NON_ASCII_URL = re.compile(r"[^\x21-\x7e]+")


class DeliveryError(Exception):
    """A message was not delivered; `reason` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Permanent(DeliveryError):
    """Retrying cannot help: a 4xx answer, a refused login, a bad address, a bad configuration."""


class Transient(DeliveryError):
    """Try again later: network down, timeout, 5xx, 429, SMTP 4xx. `retry_after`: seconds the
    receiver asked for (None = not said)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Message:
    """One notification, the same for every channel and every retry."""

    id: str  # stable across retries and restarts: receivers may de-duplicate on it
    kind: str  # raised | reminder | acknowledged | resolved | digest | suppressed | test
    severity: str  # info | warning | critical
    title: str  # one line, e.g. "pi4: room too hot (31.2 °C)"
    body: str  # a few lines of plain text
    fields: dict[str, Any]  # machine-readable facts: node, sensor, quantity, value, plugin, alert, since, by, ...
    ts: float  # when the state change happened (epoch s)


@dataclass(frozen=True)
class Channel:
    """Where messages go and how: the keys each kind uses are in the module docstring.

    Construction checks the keys the kind needs and raises ValueError naming the key."""

    name: str
    kind: str  # ntfy | webhook | email | apprise
    timeout: float = 10.0
    hub: str = ""
    url: str = field(default="", repr=False)  # ntfy, webhook
    token: str = field(default="", repr=False)  # ntfy
    secret: str = field(default="", repr=False)  # webhook
    ca: Path | None = None  # ntfy, webhook (https), email
    host: str = ""  # email
    port: int = 0  # email; 0 = 587 / 465 / 25 by security
    security: str = "starttls"  # email: starttls | ssl | none
    username: str = ""  # email
    password: str = field(default="", repr=False)  # email
    sender: str = ""  # email (TOML `from`)
    to: tuple[str, ...] = ()  # email
    urls: tuple[str, ...] = field(default=(), repr=False)  # apprise

    def __post_init__(self) -> None:
        # lenient about containers (a list or one string from TOML), strict about content
        for key in ("to", "urls"):
            value = getattr(self, key)
            object.__setattr__(self, key, (value,) if isinstance(value, str) else tuple(value))
        if self.ca is not None and not isinstance(self.ca, Path):
            object.__setattr__(self, "ca", Path(self.ca))
        if self.kind not in KINDS:
            raise ValueError(f"kind: {self.kind!r} is not one of {', '.join(KINDS)}")
        if not (isinstance(self.timeout, (int, float)) and math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError("timeout: must be a positive number of seconds")
        if self.kind in ("ntfy", "webhook"):
            parts = urllib.parse.urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("url: must be an http:// or https:// URL")
        if self.token and not _PRINTABLE_ASCII.match(self.token.strip()):
            raise ValueError("token: must be printable ASCII without spaces")
        if self.kind == "email":
            if not self.host:
                raise ValueError("host: an email channel needs the SMTP server")
            if self.security not in SECURITIES:
                raise ValueError(f"security: {self.security!r} is not one of {', '.join(SECURITIES)}")
            if not 0 <= self.port <= 65535:
                raise ValueError("port: must be 1-65535 (0 = the standard port)")
            if not _address(self.sender):
                raise ValueError("sender: not an email address")
            if not self.to:
                raise ValueError("to: an email channel needs at least one recipient")
            for address in self.to:
                if not _address(address):
                    raise ValueError(f"to: {address!r} is not an email address")
        if self.kind == "apprise":
            if not self.urls:
                raise ValueError("urls: an apprise channel needs at least one URL")
            if any(not u or _LINE_BREAKS.search(u) for u in self.urls):
                raise ValueError("urls: one URL per entry, without line breaks")

    @property
    def where(self) -> str:
        """The destination without secrets, for logs: "ntfy.sh", "smtp.example.org:587", "2 Apprise URLs"."""
        if self.kind == "email":
            return f"{self.host}:{self.port or DEFAULT_PORTS[self.security]}"
        if self.kind == "apprise":
            return f"{len(self.urls)} Apprise URL{'s' if len(self.urls) != 1 else ''}"
        return urllib.parse.urlsplit(self.url).hostname or "?"


# --- cleaning ----------------------------------------------------------------------------------


def clean_title(text: str, fallback: str = "Harvester") -> str:
    """One line, no control characters, at most MAX_TITLE characters."""
    out = []
    for ch in str(text):
        category = unicodedata.category(ch)
        if category in ("Cc", "Zl", "Zp") or ch.isspace():
            out.append(" ")
        elif category in ("Cs", "Co", "Cn") or ch in _BIDI:
            continue  # lone surrogates cannot be encoded; the others have no business in a title
        else:
            out.append(ch)
    title = " ".join("".join(out).split())
    if len(title) > MAX_TITLE:
        title = title[:MAX_TITLE - 1].rstrip() + ELLIPSIS
    return title or fallback


def clean_body(text: str, limit: int = MAX_BODY) -> str:
    """Plain text with "\\n" line ends, no other control characters but tabs, at most `limit` bytes."""
    lines = _LINE_BREAKS.sub("\n", str(text))
    body = "".join(ch for ch in lines
                   if ch in "\n\t" or (unicodedata.category(ch) not in ("Cc", "Cs") and ch not in _BIDI))
    body = body.strip("\n")
    data = body.encode("utf-8")
    if len(data) > limit:
        cut = limit - len(ELLIPSIS.encode("utf-8"))
        body = data[:cut].decode("utf-8", errors="ignore").rstrip() + ELLIPSIS
    return body


def clean(message: Message) -> Message:
    """The message as every channel sends it: a clean title and body (see clean_title, clean_body)."""
    title = clean_title(message.title, fallback=f"Harvester: {clean_title(message.kind, 'message')}")
    return replace(message, title=title, body=clean_body(message.body) or title)


def _header_text(text: str) -> str:
    """A header value from any text: one line, and RFC 2047 encoded-words when not ASCII."""
    text = clean_title(text, fallback="")
    if text.isascii():
        return text
    words, chunk, size = [], [], 0
    for ch in text:  # encoded-words of at most 75 characters, never splitting a character
        n = len(ch.encode("utf-8"))
        if size + n > 45:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(ch)
        size += n
    words.append("".join(chunk))
    return " ".join(f"=?UTF-8?B?{base64.b64encode(w.encode('utf-8')).decode('ascii')}?=" for w in words)


def _excerpt(data: bytes | str, limit: int = EXCERPT) -> str:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + ELLIPSIS


# --- entry point -------------------------------------------------------------------------------


def deliver(channel: Channel, message: Message) -> str:
    """Send one message on one channel; return a short receipt, or raise Permanent or Transient."""
    sender = _SENDERS.get(channel.kind)
    if sender is None:
        raise Permanent(f"unknown channel kind {channel.kind!r} (one of {', '.join(KINDS)})")
    return sender(channel, clean(message))


# --- HTTP (ntfy, webhook) ----------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects come back as HTTPError: urllib would re-send a POST as a GET without its body."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


@functools.lru_cache(maxsize=8)
def _ssl_context_cached(ca: str | None, mtime_ns: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()


def _ssl_context(ca: Path | None) -> ssl.SSLContext:
    """The system's trust store, or only the private CA in `ca` (cached until the file changes)."""
    if ca is None:
        return _ssl_context_cached(None, 0)
    try:
        return _ssl_context_cached(str(ca), ca.stat().st_mtime_ns)
    except (OSError, ssl.SSLError) as exc:
        raise Permanent(f"cannot use the CA file {ca}: {exc}") from None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped at a day."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _status_error(code: int, reason: str, headers: Any, content: bytes, host: str) -> DeliveryError:
    """The exception for a non-2xx answer."""
    what = f"{host}: HTTP {code}{' ' + reason if reason else ''}"
    text = _excerpt(content)
    if code in TRANSIENT_STATUS or 500 <= code <= 599:
        return Transient(f"{what}{': ' + text if text else ''}",
                         retry_after=_retry_after(headers.get("Retry-After") if headers else None))
    if 300 <= code <= 399:
        location = urllib.parse.urlsplit(headers.get("Location", "") if headers else "")
        target = f" to {location.scheme}://{location.hostname}{location.path}" if location.hostname else ""
        return Permanent(f"{what}: redirected{target}; configure the final URL (a POST is not redirected)")
    hint = {401: " (check the token or credentials)", 403: " (check the token's access to this topic or URL)",
            404: " (check the URL)", 413: " (the message is too large for the receiver)"}.get(code, "")
    return Permanent(f"{what}{hint}{': ' + text if text else ''}")


def _network_error(exc: BaseException, host: str, port: int | None, timeout: float) -> DeliveryError:
    """The exception for a failed connection or exchange (no answer at all)."""
    where = f"{host}:{port}" if port else host
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Permanent(f"{where}: TLS certificate not trusted: {exc.verify_message or exc}")
    if isinstance(exc, socket.gaierror):
        return Transient(f"cannot resolve {host}: {exc.strerror or exc}")
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        return Transient(f"{where}: no answer within {timeout:g} s")
    if isinstance(exc, ConnectionRefusedError):
        return Transient(f"{where}: connection refused")
    if isinstance(exc, (ConnectionError, http.client.HTTPException)):
        return Transient(f"{where}: connection lost ({type(exc).__name__}: {exc})")
    return Transient(f"{where}: {type(exc).__name__}: {exc}")


def _post(channel: Channel, data: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST `data` to channel.url; (status, start of the response body) for a 2xx answer."""
    parts = urllib.parse.urlsplit(channel.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Permanent("the URL must be http:// or https://")
    host = parts.hostname
    try:
        port = parts.port
    except ValueError:
        raise Permanent(f"{host}: the URL's port is not a number") from None
    headers = {"User-Agent": USER_AGENT, **headers}
    netloc = parts.netloc
    if parts.username is not None or parts.password is not None:  # userinfo: Basic auth, not part of the URL
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc += f":{port}" if port else ""
        if "Authorization" not in headers:
            pair = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
    # http.client sends the request line as ASCII: percent-encode anything else in the path and query
    path, query = (_NON_ASCII_URL.sub(lambda m: urllib.parse.quote(m.group()), x) for x in (parts.path, parts.query))
    url = urllib.parse.urlunsplit((parts.scheme, netloc, path, query, ""))
    handlers: list[Any] = [_NoRedirect()]
    if parts.scheme == "https":
        handlers.append(urllib.request.HTTPSHandler(context=_ssl_context(channel.ca)))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with opener.open(request, timeout=channel.timeout) as response:
            return response.status, response.read(RESPONSE_LIMIT)
    except urllib.error.HTTPError as exc:
        try:
            content = exc.read(RESPONSE_LIMIT) if exc.fp is not None else b""
        except (OSError, http.client.HTTPException):
            content = b""
        finally:
            exc.close()
        raise _status_error(exc.code, str(exc.reason or ""), exc.headers, content, host) from None
    except http.client.InvalidURL as exc:
        raise Permanent(f"{host}: invalid URL ({exc})") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        raise (_network_error(reason, host, port, channel.timeout) if isinstance(reason, BaseException)
               else Transient(f"{host}: {reason}")) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _network_error(exc, host, port, channel.timeout) from None
    except ValueError as exc:  # what http.client refuses to send (a URL or header it cannot encode)
        raise Permanent(f"{host}: cannot send this request ({exc})") from None


def ntfy_tags(message: Message) -> list[str]:
    """ntfy tags: emoji short codes for the kind and severity, then the node as a text tag."""
    tags: list[str] = []
    if message.kind in ("raised", "reminder"):
        tags.append(SEVERITY_TAG.get(message.severity, "information_source"))
        if message.kind == "reminder":
            tags.append("alarm_clock")
    elif message.kind in KIND_TAG:
        tags.append(KIND_TAG[message.kind])
    node = message.fields.get("node")
    if isinstance(node, str) and (safe := _TAG_UNSAFE.sub("_", node)[:64]):
        tags.append(safe)
    return tags


def ntfy_priority(message: Message) -> int:
    """5 urgent (critical), 4 high (warning), 3 default (info); calm kinds at most 3."""
    priority = PRIORITY.get(message.severity, 3)
    return min(priority, 3) if message.kind in CALM_KINDS else priority


def send_ntfy(channel: Channel, message: Message) -> str:
    """Publish to an ntfy topic (channel.url) with title, priority and tags as headers."""
    headers = {"Content-Type": "text/plain; charset=utf-8", "Title": _header_text(message.title),
               "X-Priority": str(ntfy_priority(message))}
    tags = ntfy_tags(message)
    if tags:
        headers["Tags"] = ",".join(tags)
    if channel.token.strip():
        headers["Authorization"] = f"Bearer {channel.token.strip()}"
    status, content = _post(channel, message.body.encode("utf-8"), headers)
    try:
        ntfy_id = json.loads(content).get("id")
    except (ValueError, AttributeError):
        ntfy_id = None
    return f"HTTP {status}" + (f" id={_excerpt(str(ntfy_id), 40)}" if ntfy_id else "")


def _jsonable(value: Any, depth: int = 0) -> Any:
    """`value` as plain JSON: non-finite numbers become null, unknown objects their str()."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > 20:
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_jsonable(v, depth + 1) for v in items]
    return str(value)


def webhook_body(channel: Channel, message: Message, sent: float) -> bytes:
    """The JSON a webhook receives (the layout is in the module docstring)."""
    doc = {"version": WEBHOOK_VERSION, "id": message.id, "kind": message.kind, "severity": message.severity,
           "title": message.title, "body": message.body, "ts": _jsonable(float(message.ts)),
           "sent": round(sent, 3), "hub": channel.hub or None, "fields": _jsonable(message.fields)}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def sign(secret: str, body: bytes) -> str:
    """The X-Harvester-Signature value for `body`: "sha256=<hex HMAC-SHA256>"."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """True when `header` (an X-Harvester-Signature value) signs exactly `body` with `secret`.

    For receivers: pass the raw request body bytes, before any JSON parsing."""
    if not secret or not header:
        return False
    scheme, _, value = header.strip().partition("=")
    if scheme.strip().lower() != "sha256":
        return False
    expected = sign(secret, body).partition("=")[2].encode("ascii")
    return hmac.compare_digest(expected, value.strip().lower().encode("utf-8", errors="replace"))


def _header_id(message_id: str) -> str:
    """The message id as a header value: itself when printable ASCII, else percent-encoded."""
    return message_id if _PRINTABLE_ASCII.match(message_id) else urllib.parse.quote(message_id, safe="")


def send_webhook(channel: Channel, message: Message) -> str:
    """POST the message as JSON, signed with channel.secret when there is one."""
    body = webhook_body(channel, message, time.time())
    headers = {"Content-Type": "application/json", "X-Harvester-Id": _header_id(message.id)}
    if channel.secret:
        headers["X-Harvester-Signature"] = sign(channel.secret, body)
    status, _ = _post(channel, body, headers)
    return f"HTTP {status}"


# --- email -------------------------------------------------------------------------------------


def _address(text: str) -> str:
    """The bare address in "Name <a@b>" or "a@b"; "" when it is not one (or has line breaks)."""
    if not isinstance(text, str) or _LINE_BREAKS.search(text):
        return ""
    _, address = email.utils.parseaddr(text)
    local, at, domain = address.rpartition("@")
    return address if at and local and domain and address.isascii() and " " not in address else ""


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def message_id_header(message_id: str, sender: str) -> str:
    """A Message-ID derived from the message id alone (and the sender's domain): stable across resends."""
    local = message_id if len(message_id) <= 64 and _MSGID_SAFE.match(message_id) \
        else hashlib.sha256(message_id.encode("utf-8", errors="surrogatepass")).hexdigest()[:32]
    domain = _address(sender).rpartition("@")[2] or "harvester.invalid"
    return f"<harvester.{local}@{domain}>"


def email_message(channel: Channel, message: Message) -> EmailMessage:
    """The email for a (cleaned) message."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["Subject"] = message.title
    msg["From"] = channel.sender
    msg["To"] = ", ".join(channel.to)
    msg["Date"] = email.utils.format_datetime(dt.datetime.fromtimestamp(message.ts, dt.UTC))
    msg["Message-ID"] = message_id_header(message.id, channel.sender)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Harvester-Id"] = _header_id(message.id)
    msg["X-Harvester-Kind"] = clean_title(message.kind, "?")
    msg["X-Harvester-Severity"] = clean_title(message.severity, "?")
    if message.severity == "critical" and message.kind not in CALM_KINDS:
        msg["Importance"] = "high"
        msg["X-Priority"] = "1"
    msg.set_content(message.body + "\n")
    return msg


def _smtp_error(exc: BaseException, where: str, timeout: float) -> DeliveryError:
    """The exception for an SMTP failure: 4xx Transient, 5xx Permanent."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = exc.recipients or {}
        detail = "; ".join(f"{addr}: {code} {_excerpt(resp, 80)}" for addr, (code, resp) in refused.items())
        temporary = any(400 <= code <= 499 for code, _ in refused.values())
        return (Transient if temporary else Permanent)(f"{where}: every recipient refused: {detail}")
    if isinstance(exc, smtplib.SMTPResponseException):
        code, text = exc.smtp_code, _excerpt(exc.smtp_error, 120)
        what = {smtplib.SMTPAuthenticationError: "login refused",
                smtplib.SMTPSenderRefused: "MAIL FROM refused",
                smtplib.SMTPDataError: "message (DATA) refused",
                smtplib.SMTPConnectError: "refused the connection",
                smtplib.SMTPHeloError: "refused our greeting"}.get(type(exc), "error")
        if 400 <= code <= 499 or code < 0:
            return Transient(f"{where}: {what}: {code} {text}")
        return Permanent(f"{where}: {what}: {code} {text}")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return Permanent(f"{where}: {exc}")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        if isinstance(exc.__context__, TimeoutError):  # smtplib reports a read timeout this way
            return Transient(f"{where}: no answer within {timeout:g} s")
        return Transient(f"{where}: connection lost ({exc})")
    if isinstance(exc, smtplib.SMTPException):
        return Transient(f"{where}: {type(exc).__name__}: {exc}")
    host, _, port = where.rpartition(":")
    return _network_error(exc, host, int(port), timeout)


def _transfer(smtp: smtplib.SMTP, sender: str, recipients: list[str], data: bytes) -> tuple[str, dict]:
    """MAIL, RCPT, DATA; (the server's answer to DATA, the refused recipients)."""
    smtp.ehlo_or_helo_if_needed()
    options = [f"SIZE={len(data)}"] if smtp.has_extn("size") else []
    code, resp = smtp.mail(sender, options)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, resp, sender)
    refused: dict[str, tuple[int, bytes]] = {}
    for rcpt in recipients:
        code, resp = smtp.rcpt(rcpt)
        if code not in (250, 251):
            refused[rcpt] = (code, resp)
    if len(refused) == len(recipients):
        raise smtplib.SMTPRecipientsRefused(refused)
    code, resp = smtp.data(data)
    if code != 250:
        raise smtplib.SMTPDataError(code, resp)
    return f"{code} {_excerpt(resp, 100)}", refused


def send_email(channel: Channel, message: Message) -> str:
    """Send the message by SMTP to channel.to."""
    port = channel.port or DEFAULT_PORTS[channel.security]
    where = f"{channel.host}:{port}"
    if channel.security == "none" and not _is_loopback(channel.host):
        raise Permanent(f"{where}: security = \"none\" sends in plain text, so only to a loopback host; "
                        "use starttls or ssl")
    data = email_message(channel, message).as_bytes()
    sender = _address(channel.sender)
    recipients = [_address(a) for a in channel.to]
    context = _ssl_context(channel.ca) if channel.security != "none" else None
    local = socket.gethostname() or "localhost"  # not getfqdn(): a reverse lookup can hang on a Pi
    smtp: smtplib.SMTP | None = None
    try:
        if channel.security == "ssl":
            smtp = smtplib.SMTP_SSL(channel.host, port, local_hostname=local, timeout=channel.timeout,
                                    context=context)
        else:
            smtp = smtplib.SMTP(channel.host, port, local_hostname=local, timeout=channel.timeout)
        if channel.security == "starttls":
            smtp.ehlo()
            if not smtp.has_extn("starttls"):
                raise Permanent(f"{where}: the server does not offer STARTTLS (use security = \"ssl\" "
                                "with its SMTPS port, or another server)")
            smtp.starttls(context=context)
            smtp.ehlo()
        if channel.username:
            smtp.login(channel.username, channel.password)
        receipt, refused = _transfer(smtp, sender, recipients, data)
    except DeliveryError:
        raise
    except (smtplib.SMTPException, OSError) as exc:
        raise _smtp_error(exc, where, channel.timeout) from None
    finally:
        if smtp is not None:
            _quit(smtp)
    if refused:
        receipt += "; refused: " + ", ".join(f"{a} ({code})" for a, (code, _) in refused.items())
    return receipt


def _quit(smtp: smtplib.SMTP) -> None:
    """Say goodbye; the message is already accepted or refused, so a failure here changes nothing."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


# --- apprise -----------------------------------------------------------------------------------


def _apprise_in_python() -> bool:
    """Whether this interpreter can import apprise (looked up, not imported)."""
    try:
        return importlib.util.find_spec("apprise") is not None
    except (ImportError, ValueError):
        return False


def apprise_command() -> list[str]:
    """The argv prefix that runs the Apprise CLI; Permanent when there is none."""
    if _apprise_in_python():
        return [sys.executable, "-c", "import sys; from apprise.cli import main; sys.exit(main())"]
    path = shutil.which("apprise")
    if path:
        return [path]
    raise Permanent("apprise is not installed: pip install apprise")


def _apprise_type(message: Message) -> str:
    if message.kind == "resolved":
        return "success"
    if message.kind in CALM_KINDS:
        return "info"
    return {"critical": "failure", "warning": "warning"}.get(message.severity, "info")


def _mask(text: str, urls: tuple[str, ...]) -> str:
    """`text` without the URLs' secrets: each URL (and its part after the scheme) becomes scheme://…"""
    for url in sorted(urls, key=len, reverse=True):
        scheme, sep, rest = url.partition("://")
        text = text.replace(url, f"{scheme}://{ELLIPSIS}")
        if sep and len(rest) >= 8:
            text = text.replace(rest, ELLIPSIS)
    return text


def send_apprise(channel: Channel, message: Message) -> str:
    """Run the Apprise CLI for the channel's URLs; Apprise's exit status is the outcome."""
    command = apprise_command()
    limit = channel.timeout + APPRISE_STARTUP_S
    fd, config = tempfile.mkstemp(prefix="harvester-apprise-", suffix=".txt")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(url.strip() + "\n" for url in channel.urls))
        argv = [*command, f"--notification-type={_apprise_type(message)}", f"--title={message.title}",
                f"--body={message.body}", f"--config={config}"]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise Permanent(f"cannot run apprise ({command[0]}): {exc}") from None
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise Transient(f"apprise did not finish within {limit:g} s") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(config)
    if proc.returncode == 0:
        return "apprise exit 0"
    output = (err or b"").decode("utf-8", errors="replace").strip() \
        or (out or b"").decode("utf-8", errors="replace").strip()
    text = _mask(" ".join(output.split()), channel.urls)
    text = text if len(text) <= 300 else ELLIPSIS + text[-299:]  # the end of a log says what failed
    what = f"apprise exit {proc.returncode}{': ' + text if text else ''}"
    if proc.returncode == 2:
        raise Permanent(f"{what} (Apprise refused its arguments)")
    if proc.returncode == 3:
        raise Permanent(f"{what} (no service loaded from the URLs)")
    if "at least one server URL" in output:
        raise Permanent(f"{what} (none of the URLs is a valid Apprise URL)")
    raise Transient(what)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the child and anything it started (it leads its own session), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a grandchild in another session holds the pipes
        proc.wait()


_SENDERS: dict[str, Callable[[Channel, Message], str]] = {
    "ntfy": send_ntfy, "webhook": send_webhook, "email": send_email, "apprise": send_apprise,
}
