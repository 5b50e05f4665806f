"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) and a running `harvester demo`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import HOST, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root on a CI machine: no sandbox (it needs user namespaces), no GPU, no network beyond
# loopback, nothing fetched in the background. Playwright adds --headless and gives each
# launch a fresh --user-data-dir.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class DemoRun:
    """A `harvester demo` process on free ports, with its state folder and printed output."""

    proc: subprocess.Popen
    web: int
    ns: int
    state: Path
    out: Path
    tokens: dict = field(default_factory=dict)

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.web}{path}"

    def readings(self) -> dict[str, dict]:
        with urllib.request.urlopen(self.url("/api/readings"), timeout=5) as res:
            return {n["name"]: n for n in json.load(res)["nodes"]}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[DemoRun]:
    tmp = tmp_path_factory.mktemp("demo")
    web, ns, out = free_port(), free_port(), tmp / "demo.out"
    with open(out, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "actors.cli", "demo", "--port", str(web), "--ns-port",
                                 str(ns), "--state-dir", str(tmp / "state")], stdout=log, stderr=subprocess.STDOUT,
                                cwd=ROOT)
    run = DemoRun(proc, web, ns, tmp / "state", out)
    try:
        def ready() -> bool:
            nodes, now = run.readings(), time.time()
            fresh = all(n["online"] and n["sensors"] for n in nodes.values())
            probed = "buzzer" in (nodes.get("pi4") or {}).get("actors", {})
            return set(nodes) == {"hub", "pi4", "pizero"} and fresh and probed and \
                now - nodes["pi4"]["sensors"]["dht22"]["temperature"]["ts"] < 15
        wait_for(ready, timeout=60, interval=0.5, what="demo: three nodes online, pi4 probed")
        run.tokens = json.loads((tmp / "state" / "tokens.json").read_text())
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip extra 'test')")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("chromium not installed (Debian package chromium; `make system-deps` installs it as root)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
