"""A real VictoriaMetrics (Debian's package) on a loopback port, for the export tests."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import HOST, free_port, wait_for

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
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)) as db:
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
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)) as db:
        row = db.execute("SELECT cursor FROM export_state WHERE name = ?", (target,)).fetchone()
        (top,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM samples").fetchone()
    return (row[0] if row else 0), top


def api(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as res:
        return json.loads(res.read())
