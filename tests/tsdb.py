"""A real VictoriaMetrics (Debian's package) on a loopback port, for the export tests."""

from __future__ import annotations

import base64
import collections
import contextlib
import http.server
import json
import math
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import HOST, free_port, store_ro, wait_for

BINARY = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


def have_victoria() -> bool:
    return Path(BINARY).exists()


SKIP_REASON = ("victoria-metrics is not installed (Debian package victoria-metrics; `make test` installs it "
               "when run as root)")


class Victoria:
    """One engine process with its data under `root`; stop() and start() keep the data."""

    def __init__(self, root: Path, *, dedup: bool = False, auth: tuple[str, str] | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.dedup = dedup
        self.auth = auth
        self.proc: subprocess.Popen | None = None
        self.url = f"http://{HOST}:{self.port}"
        self.write_url = f"{self.url}/write"

    def start(self) -> Victoria:
        argv = [BINARY, f"-storageDataPath={self.root / 'data'}", f"-httpListenAddr={HOST}:{self.port}",
                "-retentionPeriod=1y", "-loggerLevel=WARN"]
        if self.dedup:  # what the README advises: a resent point then overwrites itself
            argv.append("-dedup.minScrapeInterval=1ms")
        if self.auth:
            argv += [f"-httpAuth.username={self.auth[0]}", f"-httpAuth.password={self.auth[1]}"]
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "victoria.log", "ab")  # noqa: SIM115 (the child owns it)
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        wait_for(self.healthy, timeout=30, what="VictoriaMetrics to answer /health")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _request(self, path: str, data: dict[str, str] | None = None) -> bytes:
        body = urllib.parse.urlencode(data).encode() if data else None
        req = urllib.request.Request(self.url + path, data=body)
        if self.auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(":".join(self.auth).encode()).decode())
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.read()

    def healthy(self) -> bool:
        with contextlib.suppress(OSError):
            return self._request("/health").strip() == b"OK"
        return False

    def samples(self, match: str = '{__name__=~"harvester_.*"}') -> list[tuple[tuple[tuple[str, str], ...], int, float]]:
        """Every raw sample stored: (sorted labels, timestamp ms, value), duplicates included."""
        self._request("/internal/force_flush")
        out = []
        for line in self._request("/api/v1/export", {"match[]": match}).splitlines():
            series = json.loads(line)
            labels = tuple(sorted(series["metric"].items()))
            out += [(labels, ts, v) for ts, v in zip(series["timestamps"], series["values"], strict=True)]
        return out

    def rows_inserted(self) -> int:
        """Line-protocol rows this process has taken since it started."""
        for line in self._request("/metrics").decode().splitlines():
            if line.startswith('vm_rows_inserted_total{type="influx"}'):
                return int(float(line.split()[-1]))
        return 0


def expected_samples(db_path: Path, upto: int | None = None) -> list[tuple[tuple[tuple[str, str], ...], int, float]]:
    """What a hub's store should have put in the engine: one sample per reading (up to samples.id `upto`)."""
    with contextlib.closing(store_ro(db_path)) as db:
        rows = db.execute("SELECT s.node, s.sensor, s.quantity, s.unit, x.quality, x.ts, x.value FROM samples x "
                          "JOIN series s ON s.id = x.series WHERE x.id <= ?", (upto or 2**62,)).fetchall()
    out = []
    for node, sensor, quantity, unit, quality, ts, value in rows:
        name = "harvester_unavailable" if value is None else "harvester_value"
        labels = tuple(sorted({"__name__": name, "node": node, "sensor": sensor, "quantity": quantity,
                               "unit": unit, "quality": quality}.items()))
        out.append((labels, round(ts * 1e6) // 1000, 1.0 if value is None else value))
    return out


def exported_upto(db_path: Path, target: str) -> tuple[int, int]:
    """(the target's cursor, the highest samples.id) in a hub's store."""
    with contextlib.closing(store_ro(db_path)) as db:
        row = db.execute("SELECT cursor FROM export_state WHERE name = ?", (target,)).fetchone()
        (top,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM samples").fetchone()
    return (row[0] if row else 0), top


def api(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as res:
        return json.loads(res.read())


def check_engine_holds(db: Path, engine: Victoria, cursor: int, peers: tuple[Path, ...] = ()) -> int:
    """Every reading up to `cursor` is in the engine with its tags, timestamp and value, and the
    engine holds nothing the hub (or one of its `peers`) never stored. Returns how many readings were checked.

    Duplicates are counted on the wire (Relay), not here: the engine's raw export may list a
    sample twice for a moment while it merges parts."""
    upto = expected_samples(db, cursor)
    assert len(upto) == len({(labels, ts) for labels, ts, _ in upto}), "two readings of one series at one ms"
    held: list[Any] = []

    def missing_now() -> list[Any]:
        held[:] = engine.samples()
        have = {(labels, ts) for labels, ts, _ in held}
        return [(labels, ts) for labels, ts, _ in upto if (labels, ts) not in have]
    # The engine answers a write before the rows are searchable (even after its force_flush): the
    # last page may take a moment to show.
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not missing_now(), timeout=15, interval=0.5, what="the last rows to be searchable")
    missing = missing_now()
    assert not missing, f"{len(missing)} of {len(upto)} readings not in the engine, e.g. {missing[:3]}"
    # read after the engine; with several hubs, what any of them stored (an earlier leader exported
    # its latest readings before they reached this hub's store)
    everything = {(labels, ts): v for store in (db, *peers) for labels, ts, v in expected_samples(store)}
    unknown = [(labels, ts) for labels, ts, _ in held if (labels, ts) not in everything]
    assert not unknown, f"the engine holds samples the hub never stored, e.g. {unknown[:3]}"
    for labels, ts, value in held:
        assert math.isclose(value, everything[labels, ts], rel_tol=1e-12), (labels, ts, value)
    return len(upto)


class Relay:
    """Between hubs and the engine: counts every line it forwards, refuses (503) while `down`, and
    can hold each request for `delay` seconds (a slow engine)."""

    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        self.down, self.delay = False, delay
        self.lines: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 503
                if not owner.down:
                    time.sleep(owner.delay)
                    req = urllib.request.Request(upstream + "?" + self.path.partition("?")[2], data=body)
                    if "Authorization" in self.headers:
                        req.add_header("Authorization", self.headers["Authorization"])
                    try:
                        with urllib.request.urlopen(req, timeout=10) as res:
                            status = res.status
                    except urllib.error.HTTPError as exc:
                        status = exc.code
                    except OSError:
                        status = 502
                    if 200 <= status < 300:
                        with owner._lock:
                            owner.lines.update(body.decode().splitlines())
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.write_url = f"http://{HOST}:{self.server.server_address[1]}/write"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def resent(self) -> int:
        """Lines the engine took more than once."""
        with self._lock:
            return sum(n - 1 for n in self.lines.values())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
