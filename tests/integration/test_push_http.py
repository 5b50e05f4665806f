"""HTTP /push: the same contract as the Pyro5 push, with node tokens, strict validation and
property-based fuzzing — bad input gets a 4xx and stores nothing, ever."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import HOST


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
    "value": st.text(max_size=5) | st.booleans() | st.floats(min_value=86, max_value=1e300) | st.lists(st.integers()),
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

    @settings(max_examples=1200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
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
