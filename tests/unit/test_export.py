"""The exporter against a real local HTTP receiver: line protocol, cursor, retries, stops, retention, Raft ledger."""

from __future__ import annotations

import base64
import http.server
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actors.hub.export import MIN_PAGE, Exporter, Sample, encode
from actors.hub.store import Batch, Row, Store
from actors.node.config import ConfigError, ExportTarget, parse_config

NOW = 1_790_000_000.0


class Receiver:
    """An InfluxDB-style write endpoint on 127.0.0.1 that answers from a script of status codes."""

    def __init__(self) -> None:
        self.script: list[int] = []  # status codes for the next requests; 204 once it runs out
        self.lines: list[str] = []  # every line of every accepted request, in order
        self.requests: list[dict[str, Any]] = []
        self.delay = 0.0
        self.headers_out: dict[str, str] = {}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if owner.delay:
                    time.sleep(owner.delay)
                status = owner.script.pop(0) if owner.script else 204
                if status == 204:
                    owner.lines.extend(body.splitlines())
                self.send_response(status)
                for k, v in owner.headers_out.items():
                    self.send_header(k, v)
                text = b"" if status == 204 else b'{"error":"scripted failure"}'
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/write"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "hub.sqlite3")
    yield s
    s.close()


def fill(store: Store, node: str = "pi4", batches: int = 30, first: int = 1, per: int = 4) -> int:
    """`batches` batches of `per` readings (one unavailable in each); returns readings stored."""
    out = []
    for seq in range(first, first + batches):
        ts = NOW - 1000 + seq
        rows = [Row("dht", "temperature", 20 + seq / 100 + i, "°C", ts + i / 10, "ok", None) for i in range(per - 1)]
        rows.append(Row("bme", "humidity", None, "%", ts, "unavailable", "bus error"))
        out.append(Batch(node, seq, rows, []))
    store.commit_batches(out, NOW - 1000 + first, {node: NOW})
    return batches * per


def target(url: str, **kw: Any) -> ExportTarget:
    return ExportTarget(kw.pop("name", "vm"), url, **{"batch_size": 10, **kw})


def drain(e: Exporter, clock: Clock | None = None, rounds: int = 50) -> None:
    """Run rounds until nothing is left (moving an injected clock past any backoff)."""
    for _ in range(rounds):
        e.step()
        if e.stopped or e.backlog()[0] == 0:
            return
        if clock is not None:
            clock.t += 61
    raise AssertionError(f"export did not drain: {e.status()}")


def expected_lines(store: Store) -> list[str]:
    store.settle()
    with store._lock:
        rows = store._db.execute(
            "SELECT x.id, s.node, s.sensor, s.quantity, s.unit, x.ts, x.value, x.quality, x.reason, x.seq "
            "FROM samples x JOIN series s ON s.id = x.series ORDER BY x.id").fetchall()
    return encode([Sample._make(r) for r in rows], "harvester").decode().splitlines()


# -- line protocol --------------------------------------------------------------------------------
def test_lines_carry_tags_value_and_the_spoke_timestamp_in_ns():
    ok = Sample(1, "pi4", "dht", "temperature", "°C", 1790000000.123, 23.4, "ok", None, 7)
    gone = Sample(2, "pi4", "bme", "humidity", "%", 1790000001.0, None, "unavailable", "bus error", 7)
    assert encode([ok, gone], "harvester").decode().splitlines() == [
        "harvester,node=pi4,sensor=dht,quantity=temperature,unit=°C,quality=ok value=23.4 1790000000123000000",
        "harvester,node=pi4,sensor=bme,quantity=humidity,unit=%,quality=unavailable unavailable=1 1790000001000000000",
    ]


def test_tag_values_with_spaces_commas_and_equals_are_escaped():
    s = Sample(1, "pi4", "s.1", "x", "a b,c=d", 1.0, 1.0, "ok", None, 1)
    assert r",unit=a\ b\,c\=d,quality=ok " in encode([s], "m").decode()


def test_the_same_reading_always_gives_the_same_line():
    """A resend after a crash must overwrite, so the timestamp may not wobble with float rounding."""
    a = Sample(1, "pi4", "dht", "temperature", "°C", 1790000000.1 + 0.2, 1.0, "ok", None, 1)
    b = a._replace(id=99, ts=1790000000.3)
    assert encode([a], "h").split(b" ")[-1] == encode([b], "h").split(b" ")[-1]


# -- sending ---------------------------------------------------------------------------------------
def test_every_reading_goes_out_once_in_order_and_a_restart_resumes_from_the_cursor(store, receiver):
    n = fill(store, batches=30)
    e = Exporter(target(receiver.url), store.path, store)
    drain(e)
    assert receiver.lines == expected_lines(store) and len(receiver.lines) == n
    assert e.status()["backlog"] == 0 and e.status()["sent"] == n and e.status()["state"] == "ok"
    e.stop()
    more = fill(store, batches=5, first=31)
    again = Exporter(target(receiver.url), store.path, store)  # a hub restart: state from the store
    assert again.sent == n
    drain(again)
    assert receiver.lines == expected_lines(store) and len(receiver.lines) == n + more
    again.stop()


def test_a_receiver_failing_three_times_gets_everything_after_backoff(store, receiver):
    n = fill(store, batches=10)
    clock = Clock()
    receiver.script = [503, 500, 503]
    e = Exporter(target(receiver.url), store.path, store, clock=clock)
    e.step()
    s = e.status()
    assert s["state"] == "retrying" and "HTTP 503" in s["last_error"] and s["error_since"] == NOW
    assert e.step() == 0  # inside its backoff: no request
    assert len(receiver.requests) == 1
    drain(e, clock)
    assert receiver.lines == expected_lines(store) and len(receiver.lines) == n
    assert len(receiver.requests) == 3 + n // 10
    assert e.status()["state"] == "ok" and e.status()["last_error"] is None


def test_retry_after_is_honoured(store, receiver):
    fill(store, batches=2)
    clock = Clock()
    receiver.script = [429]
    receiver.headers_out = {"Retry-After": "7"}
    e = Exporter(target(receiver.url), store.path, store, clock=clock)
    e.step()
    clock.t += 5
    assert e.step() == 0 and len(receiver.requests) == 1
    clock.t += 2.1
    assert e.step() == 8


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_a_4xx_stops_the_target_with_the_error_and_sends_nothing_more(store, receiver, status):
    fill(store, batches=3)
    receiver.script = [status]
    e = Exporter(target(receiver.url), store.path, store)
    e.step()
    e.step()
    s = e.status()
    assert s["state"] == "stopped" and f"HTTP {status}" in s["last_error"] and "scripted failure" in s["last_error"]
    assert len(receiver.requests) == 1 and receiver.lines == []
    assert s["backlog"] == 12  # nothing is lost: the readings wait in the store


def test_a_413_halves_the_page(store, receiver):
    n = fill(store, batches=100, per=4)
    receiver.script = [413]
    e = Exporter(target(receiver.url, batch_size=400), store.path, store)
    drain(e)
    assert len(receiver.lines) == n and e._page == max(MIN_PAGE, 200)
    assert [len(r["body"].splitlines()) for r in receiver.requests] == [400, 200, 200]


def test_a_slow_engine_times_out_and_is_retried(store, receiver):
    fill(store, batches=1)
    clock = Clock()
    receiver.delay = 1.5
    e = Exporter(target(receiver.url, timeout=0.5), store.path, store, clock=clock)
    e.step()
    assert e.status()["state"] == "retrying" and "timed out" in e.status()["last_error"]
    receiver.delay = 0
    receiver.lines.clear()  # the slow request may have been taken after the client gave up
    drain(e, clock)
    assert len(receiver.lines) == 4


def test_a_refused_connection_is_retried(store, receiver):
    fill(store, batches=1)
    port = receiver.server.server_address[1]
    receiver.close()
    clock = Clock()
    e = Exporter(target(f"http://127.0.0.1:{port}/write"), store.path, store, clock=clock)
    e.step()
    assert e.status()["state"] == "retrying" and "Connection refused" in e.status()["last_error"]


def test_a_crash_between_send_and_cursor_write_resends_the_same_lines(store, receiver, monkeypatch):
    fill(store, batches=3)
    e = Exporter(target(receiver.url, batch_size=100), store.path, store)
    real = store.save_export

    def crash(*args: Any) -> None:
        raise OSError("killed before the cursor was written")
    monkeypatch.setattr(store, "save_export", crash)
    with pytest.raises(OSError):
        e.step()
    monkeypatch.setattr(store, "save_export", real)
    restarted = Exporter(target(receiver.url, batch_size=100), store.path, store)
    drain(restarted)
    first, second = receiver.requests[0]["body"], receiver.requests[1]["body"]
    assert first == second  # the engine overwrites the same points: nothing doubles


def test_readings_retention_deletes_before_they_were_sent_are_counted(store, receiver):
    fill(store, batches=10)  # ts NOW-999 .. NOW-990
    receiver.script = [503]
    e = Exporter(target(receiver.url), store.path, store, clock=Clock())
    e.step()
    store.retain(raw_days=995 / 86400, rollup_days=400, now=NOW)  # deletes ts < NOW-995: batches 1..4
    s = e.status()
    assert s["lost"] == 16 and s["backlog"] == 24


def test_v1_database_v2_bucket_token_and_basic_auth_on_the_wire(store, receiver, tmp_path):
    fill(store, batches=1)
    (tmp_path / "token").write_text("s3cret\n")
    (tmp_path / "pw").write_text("hunter2")
    cases = [
        (dict(name="a", database="fleet"), "db=fleet", None),
        (dict(name="b", org="lab", bucket="fleet", token_file=tmp_path / "token"), "org=lab&bucket=fleet",
         "Token s3cret"),
        (dict(name="c", token_file=tmp_path / "token", token_scheme="Bearer"), "precision=ns", "Bearer s3cret"),
        (dict(name="d", username="harvester", password_file=tmp_path / "pw"), "precision=ns",
         "Basic " + base64.b64encode(b"harvester:hunter2").decode()),
    ]
    for kw, query, auth in cases:
        Exporter(target(receiver.url, **kw), store.path, store).step()
        req = receiver.requests[-1]
        assert query in req["path"] and "precision=ns" in req["path"]
        assert req["headers"].get("Authorization") == auth


def test_an_unreadable_token_file_stops_the_target_naming_the_file(store, receiver, tmp_path):
    fill(store, batches=1)
    e = Exporter(target(receiver.url, token_file=tmp_path / "missing"), store.path, store)
    e.step()
    assert e.stopped and "cannot read token_file" in e.stopped and "missing" in e.stopped
    assert receiver.requests == []


# -- several hubs: the Raft ledger ---------------------------------------------------------------------
class Ledger:
    def __init__(self, leads: bool) -> None:
        self.lead = leads
        self.done: dict[str, set[tuple[str, int]]] = {}

    def leads(self) -> bool:
        return self.lead

    def exported(self, target: str, node: str, seq: int) -> bool:
        return (node, seq) in self.done.get(target, set())

    def mark_exported(self, target: str, pairs: list[tuple[str, int]]) -> None:
        self.done.setdefault(target, set()).update(pairs)


def test_a_follower_moves_its_cursor_over_what_the_leader_exported_and_stops_at_a_gap(store, receiver):
    fill(store, batches=10)
    ledger = Ledger(leads=False)
    ledger.done["vm"] = {("pi4", s) for s in (1, 2, 3, 5)}
    e = Exporter(target(receiver.url, batch_size=100), store.path, store, ledger=ledger)
    e.step()
    assert receiver.requests == [] and e.status()["state"] == "standby"
    assert e.cursor == 12 and store.export_state("vm")["cursor"] == 12  # batches 1..3, 4 readings each


def test_a_new_leader_skips_batches_already_exported_and_records_the_ones_it_sends(store, receiver):
    fill(store, batches=10)
    ledger = Ledger(leads=True)
    ledger.done["vm"] = {("pi4", s) for s in (1, 2, 3, 5)}
    e = Exporter(target(receiver.url, batch_size=8), store.path, store, ledger=ledger)
    drain(e)
    sent_seqs = sorted({int(round(float(line.rsplit(" ", 1)[1]) / 1e9 - (NOW - 1000))) for line in receiver.lines})
    assert sent_seqs == [4, 6, 7, 8, 9, 10]
    assert ledger.done["vm"] == {("pi4", s) for s in range(1, 11)}


def test_a_batch_split_across_pages_is_recorded_only_once_it_is_whole(store, receiver):
    fill(store, batches=2, per=6)  # 12 readings; pages of 8 split batch 2
    ledger = Ledger(leads=True)
    recorded: list[list[tuple[str, int]]] = []
    real = ledger.mark_exported
    ledger.mark_exported = lambda t, pairs: (recorded.append(pairs), real(t, pairs))  # type: ignore[method-assign]
    e = Exporter(target(receiver.url, batch_size=8), store.path, store, ledger=ledger)
    drain(e)
    assert recorded == [[("pi4", 1)], [("pi4", 2)]]


# -- config ------------------------------------------------------------------------------------------
BASE = {"node": {"name": "hub", "role": "hub", "state_dir": "/tmp/x"}, "hub": {"host": "127.0.0.1"}}


def test_export_config_one_table_or_several_with_names_from_the_url():
    one = parse_config({**BASE, "export": {"url": "http://127.0.0.1:8428/write"}})
    assert [t.name for t in one.exports] == ["127.0.0.1-8428"]
    two = parse_config({**BASE, "export": [{"url": "http://a:8428/write"},
                                          {"url": "https://b/api/v2/write", "name": "cloud", "bucket": "x"}]})
    assert [t.name for t in two.exports] == ["a-8428", "cloud"] and two.exports[1].bucket == "x"


@pytest.mark.parametrize(("export", "where", "words"), [
    ({"url": "ftp://x/write"}, "export.url", "http(s)://"),
    ({"url": "http://a/write", "username": "u"}, "export", "needs both username and password_file"),
    ({"url": "http://a/write", "token_file": "t", "username": "u", "password_file": "p"}, "export", "not both"),
    ({"url": "http://a/write", "ca": "ca.pem"}, "export.ca", "https"),
    ({"url": "http://a/write", "batch_size": 0}, "export.batch_size", "between 1 and 100000"),
    ({"url": "http://a/write", "colour": "red"}, "export.colour", "unknown key"),
    ([{"url": "http://a/write"}, {"url": "http://a/write"}], "export[1].name", "already called"),
])
def test_export_config_problems_name_the_key(export, where, words):
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, "export": export})
    assert any(k == where and words in m for k, m in err.value.problems), err.value.problems


def test_a_spoke_does_not_export():
    spoke = {"node": {"name": "pi4", "role": "spoke", "state_dir": "/tmp/x"}, "hub": {"host": "127.0.0.1"}}
    with pytest.raises(ConfigError, match="only a hub exports"):
        parse_config({**spoke, "export": {"url": "http://a/write"}})
