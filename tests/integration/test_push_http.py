"""HTTP /push: the same contract as the Pyro5 push, with node tokens, strict validation and
property-based fuzzing — bad input gets a 4xx and stores nothing, ever."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import HOST
from web.http import MAX_BODY
from web.server import BODY_CAP


@pytest.fixture
def conn(cluster):
    conn = http.client.HTTPConnection(HOST, cluster.web_port, timeout=10)
    yield conn
    conn.close()


def post(conn, body: bytes | str, token: str | None, headers: dict | None = None) -> tuple[int, dict]:
    h = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    conn.request("POST", "/push", body=body.encode() if isinstance(body, str) else body, headers=h)
    res = conn.getresponse()
    raw = res.read()
    return res.status, json.loads(raw) if raw else {}


def batch(seq: int, node: str = "probe", **reading) -> dict:
    r = {"sensor": "dht22", "quantity": "temperature", "value": 21.5, "unit": "°C", "ts": time.time()}
    r.update(reading)
    return {"node": node, "seq": seq, "readings": [r]}


def test_push_http_accepts_batches_idempotently(cluster, conn):
    token = cluster.hub.role.tokens.ensure_node("probe")
    status, body = post(conn, json.dumps(batch(1)), token)
    assert (status, body) == (200, {"acked": [1], "duplicates": 0})
    status, body = post(conn, json.dumps([batch(1), batch(2)]), token, {"X-Sent-At": str(time.time())})
    assert (status, body) == (200, {"acked": [1, 2], "duplicates": 1})
    assert cluster.hub.role.hub.store.count("probe") == 2
    node = cluster.node_snapshot("probe")
    assert node["online"] and node["sensors"]["dht22"]["temperature"]["value"] == 21.5 and node["clock_ok"]


@pytest.mark.parametrize("token, status, message", [
    (None, 401, "missing 'Authorization: Bearer"),
    ("wrong", 403, "unknown node token"),
])
def test_push_http_needs_a_node_token(cluster, conn, token, status, message):
    got, body = post(conn, json.dumps(batch(1)), token)
    assert got == status and message in body["error"]
    assert cluster.hub.role.hub.store.count("probe") == 0


def test_push_http_token_of_another_node_is_refused(cluster, conn):
    cluster.hub.role.tokens.ensure_node("probe")
    other = cluster.hub.role.tokens.ensure_node("other")
    status, body = post(conn, json.dumps(batch(1)), other)
    assert status == 403 and "belongs to node 'other'" in body["error"]


@pytest.mark.parametrize("body, status, message", [
    ("{", 400, "malformed JSON"),
    ('{"node": "probe", "seq": 1, "readings": [{"sensor": "dht22", "quantity": "temperature", "value": NaN, '
     '"unit": "°C", "ts": 1}]}', 400, "NaN is not a number JSON allows"),
    (json.dumps(batch(1, value="hot")), 400, "value must be a number"),
    (json.dumps(batch(0)), 400, "seq' must be a positive integer"),
    (json.dumps({"node": "probe", "seq": 1}), 400, "'readings' must be a list"),
    (json.dumps(batch(1, ts=time.time() + 10 * 86400)), 400, "in the future"),
    (json.dumps(batch(1, quantity="colour")), 400, "unknown quantity"),
    (json.dumps({"node": "probe", "seq": 1, "readings": [batch(1)["readings"][0]] * 1001}), 400, "at most 1000"),
    ("[" * 100_000, 400, "malformed JSON"),
    ("x" * (1024 * 1024 + 1), 413, "exceeds the 1048576-byte limit"),
    (b"\xff\xfe", 400, "not UTF-8"),
    ("", 400, "empty body"),
])
def test_push_http_bad_bodies_get_a_clear_4xx_and_store_nothing(cluster, conn, body, status, message):
    token = cluster.hub.role.tokens.ensure_node("probe")
    got, answer = post(conn, body, token)
    assert got == status and message in answer["error"]
    assert cluster.hub.role.hub.store.count("probe") == 0


# --- property-based fuzzing ----------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)

GOOD_READING = {"sensor": "dht22", "quantity": "temperature", "value": 21.5, "unit": "°C", "ts": 1_700_000_000.0}
BAD_FIELD_VALUES = {
    "sensor": st.sampled_from(["", "DHT 22", "x" * 65]) | st.integers() | st.none() | st.lists(st.text()),
    "quantity": st.text(max_size=12).filter(lambda s: s not in ("temperature",)) | st.integers() | st.none(),
    "value": st.text(max_size=5) | st.booleans() | st.floats(min_value=126, max_value=1e300) | st.lists(st.integers()),
    "unit": st.text(max_size=3).filter(lambda s: s != "°C") | st.integers(),
    "ts": st.text(max_size=5) | st.booleans() | st.floats(min_value=2e10, max_value=1e300) | st.none(),
    "quality": st.text(max_size=8).filter(lambda s: s not in ("ok", "calibrating")) | st.integers(),
    "reason": st.integers() | st.lists(st.integers(), min_size=1),
}


@st.composite
def bad_bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "field", "missing", "extra", "batch"]))
    if kind == "bytes":
        raw = draw(st.binary(max_size=200))
        return raw if raw.strip() not in (b"", b"{}") else b"{bad"
    if kind == "json":
        value = draw(json_values)
        return json.dumps(value).encode()
    reading = dict(GOOD_READING)
    batch_ = {"node": "probe", "seq": draw(st.integers(1, 10**9)), "readings": [reading]}
    if kind == "field":
        key = draw(st.sampled_from(sorted(BAD_FIELD_VALUES)))
        reading[key] = draw(BAD_FIELD_VALUES[key])
    elif kind == "missing":
        del reading[draw(st.sampled_from(["sensor", "quantity", "value", "unit", "ts"]))]
    elif kind == "extra":
        reading[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in GOOD_READING
                                                             and k not in ("quality", "reason", "node")))] = 1
    else:
        key = draw(st.sampled_from(["seq", "readings", "node", "extra"]))
        batch_[key] = draw({"seq": st.integers(max_value=0) | st.text() | st.floats() | st.booleans(),
                            "readings": st.text() | st.integers() | st.dictionaries(st.text(), st.integers()),
                            "node": st.text(max_size=8).filter(lambda n: n != "probe") | st.integers(),
                            "extra": st.integers()}[key])
    return json.dumps(batch_, allow_nan=True).encode()


def test_push_http_fuzz_only_4xx_and_nothing_stored(cluster):
    token = cluster.hub.role.tokens.ensure_node("probe")
    conn = http.client.HTTPConnection(HOST, cluster.web_port, timeout=10)
    statuses: dict[int, int] = {}

    @settings(max_examples=1200, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    @given(body=bad_bodies())
    def check(body: bytes) -> None:
        status, _ = post(conn, body, token)
        statuses[status] = statuses.get(status, 0) + 1
        assert 400 <= status < 500, f"{status} for {body[:200]!r}"

    check()
    conn.close()
    assert sum(statuses.values()) >= 1000
    assert cluster.hub.role.hub.store.count("probe") == 0
    assert post(http.client.HTTPConnection(HOST, cluster.web_port, timeout=10), json.dumps(batch(1)), token)[0] == 200


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_push_http_readme_curl_example_works(cluster):
    token = cluster.hub.role.tokens.ensure_node("probe")
    body = json.dumps(batch(1))
    out = subprocess.run(["curl", "-sS", "-X", "POST", f"http://{HOST}:{cluster.web_port}/push",
                          "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json",
                          "-d", body], capture_output=True, text=True, timeout=30, check=True).stdout
    assert json.loads(out) == {"acked": [1], "duplicates": 0}


# --- ranges, the body cap, refused pushes change nothing -----------------------------------
def hub_state(cluster) -> dict[str, Any]:
    """What a refused push must leave as it was: the node list, probe's rows and alerts, the duplicates.

    (readings_stored moves with the hub's own monitor sensor; probe's rows stand for it.)"""
    hub = cluster.hub.role.hub
    return {"nodes": hub.node_names(), "stored_nodes": sorted(n["name"] for n in hub.store.nodes()),
            "rows": hub.store.count("probe"), "alerts": hub.alerts(active_only=False),
            "duplicates": hub.duplicates}


@pytest.mark.parametrize("body, message", [
    (batch(2**63), "'seq' must be a positive integer up to 9223372036854775807, got 9223372036854775808"),
    (batch(1, ts=-(2**70)), "before 1970"),
    ({**batch(1), "alerts": [{"plugin": "p", "version": "1", "alert": "a", "state": "raised",
                              "severity": "info", "message": "m", "node": "probe", "value": 2**63,
                              "ts": 1.7e9}]}, "bad alert field 'value'"),
    (batch(1, value=10**400), "value must be a finite number"),
])
def test_push_http_out_of_range_numbers_get_400_and_change_nothing(cluster, conn, body, message):
    token = cluster.hub.role.tokens.ensure_node("probe")
    before, rejected = hub_state(cluster), cluster.hub.role.hub.rejected
    status, answer = post(conn, json.dumps(body), token)
    assert status == 400 and message in answer["error"], answer
    assert hub_state(cluster) == before and "probe" not in before["nodes"]
    assert cluster.hub.role.hub.rejected == rejected + 1
    conn.request("GET", "/api/nodes")
    assert "probe" not in {n["name"] for n in json.loads(conn.getresponse().read())}


@pytest.mark.parametrize("sent_at", ["1e308", "nan", "inf", "-1", "1e400", "12e9", "soon"])
def test_push_http_x_sent_at_must_be_a_plausible_clock(cluster, conn, sent_at):
    token = cluster.hub.role.tokens.ensure_node("probe")
    before, rejected = hub_state(cluster), cluster.hub.role.hub.rejected
    status, answer = post(conn, json.dumps(batch(1)), token, {"X-Sent-At": sent_at})
    assert status == 400 and answer["error"] == \
        f"X-Sent-At must be epoch seconds between 0 and 10000000000, got {sent_at!r}"
    assert hub_state(cluster) == before and cluster.hub.role.hub.rejected == rejected + 1
    assert post(conn, json.dumps(batch(1)), token, {"X-Sent-At": "0"})[0] == 200  # 1970: a board without an RTC
    assert cluster.node_snapshot("probe")["clock_ok"] is False


def raw_request(port: int, data: bytes) -> tuple[int, dict[str, str], dict]:
    """Send raw bytes on a fresh connection and read the answer until the server closes it."""
    with socket.create_connection((HOST, port), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:  # the server closed with our bytes unread: the answer came first
                break
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def push_head(token: str, *extra: str) -> bytes:
    return "\r\n".join(["POST /push HTTP/1.1", f"Host: {HOST}", f"Authorization: Bearer {token}",
                        "Content-Type: application/json", *extra, "", ""]).encode()


def test_push_http_refuses_a_huge_declared_body_before_reading_it(cluster):
    """Only the headers are sent: the 413 comes on the declared length alone (before, waitress
    would wait for and spool all 300 MB to a temporary file first)."""
    token = cluster.hub.role.tokens.ensure_node("probe")
    before = hub_state(cluster)
    status, headers, answer = raw_request(cluster.web_port, push_head(token, "Content-Length: 314572800"))
    assert status == 413 and headers["content-type"] == "application/json"
    assert answer == {"error": f"body of 314572800 bytes exceeds the {MAX_BODY}-byte limit; "
                               f"send at most {MAX_BODY} bytes"}
    assert hub_state(cluster) == before


def test_push_http_caps_a_chunked_body_as_it_streams(cluster):
    """A chunk that announces 2 MiB, sent only up to the cap and never finished: the server
    answers 413 as soon as the cap is crossed instead of waiting for the rest."""
    token = cluster.hub.role.tokens.ensure_node("probe")
    before = hub_state(cluster)
    chunk_line = f"{2 * MAX_BODY:x}\r\n".encode()
    body = chunk_line + b"x" * (BODY_CAP - len(chunk_line))
    status, headers, answer = raw_request(cluster.web_port, push_head(token, "Transfer-Encoding: chunked") + body)
    assert status == 413 and headers["content-type"] == "application/json"
    assert answer == {"error": f"body exceeds the {MAX_BODY}-byte limit; send at most {MAX_BODY} bytes"}
    assert hub_state(cluster) == before
    # a chunked body within the limit is read whole and stored
    good = json.dumps(batch(1)).encode()
    ok = push_head(token, "Transfer-Encoding: chunked", "Connection: close") + \
        f"{len(good):x}\r\n".encode() + good + b"\r\n0\r\n\r\n"
    assert raw_request(cluster.web_port, ok)[::2] == (200, {"acked": [1], "duplicates": 0})


# property-based: numbers and strings at and past the edges of what SQLite and a float hold,
# anywhere in an otherwise well-formed push (and X-Sent-At): a 2xx, or a 4xx that changes nothing.
EDGE_INTS = st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30, -(10**30), 10**400,
                             -(10**400), 0, -1, 1]) | st.integers(-(2**80), 2**80)
EDGE_NUMBERS = EDGE_INTS | st.floats(allow_nan=False) | st.sampled_from([1e308, -1e308, 5e-324, 1.7e9])
EDGE_TEXT = st.text(max_size=12) | st.sampled_from(["\ud800", "a\udcff", "pi4🔥", "x" * 5000, ""])
SENT_AT = st.sampled_from(["1e308", "nan", "inf", "-inf", "-1", "1e400", "abc", "1700000000", "0", "1_0",
                           "0x10", " 5 ", "9" * 400])


@st.composite
def edge_pushes(draw) -> tuple[bytes, dict[str, str]]:
    reading = dict(GOOD_READING, ts=time.time() - 1)
    key = draw(st.sampled_from(["ts", "value", "reason", "quality", "sensor"]))
    reading[key] = draw(EDGE_NUMBERS | EDGE_TEXT | st.none())
    if key == "reason":
        reading.update(value=None, quality="unavailable")
    body: dict[str, Any] = {"node": "probe", "seq": draw(EDGE_INTS | st.integers(1, 10**6)), "readings": [reading]}
    if draw(st.booleans()):
        event = {"plugin": "p", "version": "1", "alert": "a", "state": "raised", "severity": "info",
                 "message": "m", "node": "probe", "ts": time.time()}
        field = draw(st.sampled_from(["value", "ts", "since", "message", "plugin", "sensor"]))
        event[field] = draw(EDGE_NUMBERS | EDGE_TEXT)
        body["alerts"] = [event]
    headers = {"X-Sent-At": draw(SENT_AT)} if draw(st.booleans()) else {}
    return json.dumps(draw(st.sampled_from([body, [body]]))).encode(), headers


def test_push_http_fuzz_edges_only_2xx_or_4xx_and_a_refusal_changes_nothing(cluster):
    token = cluster.hub.role.tokens.ensure_node("probe")
    hub = cluster.hub.role.hub
    conn = http.client.HTTPConnection(HOST, cluster.web_port, timeout=10)
    statuses: dict[int, int] = {}

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    @given(push=edge_pushes())
    def check(push: tuple[bytes, dict[str, str]]) -> None:
        body, headers = push
        before, rejected = hub_state(cluster), hub.rejected
        status, answer = post(conn, body, token, headers)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, f"{status} {answer} for {body[:300]!r} {headers}"
        if status >= 400:
            assert 400 <= status < 500 and isinstance(answer.get("error"), str) and "\n" not in answer["error"]
            assert len(answer["error"]) < 600, answer
            assert hub_state(cluster) == before, body[:300]
            assert hub.rejected == rejected + 1  # counted exactly once
        else:
            assert hub.rejected == rejected

    check()
    conn.close()
    assert statuses.get(400, 0) > 50 and statuses.get(200, 0) > 10, statuses
