"""Hot reload in the sandbox: under a steady evaluation load no evaluation is lost, and a broken
edit in the middle keeps the old version running."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from plugins.host import PluginHost
from plugins.services import RecordingServices
from tests.helpers import wait_for
from tests.plugins_fixtures import reading, wasm_backend, write_plugin

__all__ = ["wasm_backend"]


def version(v: int) -> str:
    return (f"VERSION = {v}\n\ndef evaluate(readings, host):\n"
            f"    n = host.state_get('n', 0) + 1\n    host.state_set('n', n)\n"
            f"    return {{'version': VERSION, 'n': n}}\n")


def test_hot_reload_under_load_loses_no_evaluation(tmp_path: Path, wasm_backend: Any) -> None:
    folder = tmp_path / "plugins"
    path = write_plugin(folder, "counter", version(1))
    host = PluginHost("pi4", folder, "wasm", RecordingServices("pi4"), tmp_path / "state", backend=wasm_backend)
    assert host.scan()["loaded"] == ["counter"]
    outcomes: list[dict[str, Any]] = []
    calls = 0
    stop = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        nonlocal calls
        try:
            while not stop.is_set():
                out = host.evaluate([reading("temperature", 21.0, host.clock())])
                calls += 1
                outcomes.extend(out)
        except BaseException as exc:  # surfaced by the assertions below
            errors.append(exc)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        reports = []
        for v in (2, 3, "broken", 4, 5):
            seen = len(outcomes)
            wait_for(lambda seen=seen: len(outcomes) >= seen + 20, timeout=30, what="evaluations between edits")
            path.write_text(version(v) if v != "broken" else "def evaluate(readings, host):\n    return {\n")
            reports.append(host.scan())
        wait_for(lambda: any(o["result"] and o["result"]["version"] == 5 for o in outcomes[-5:]),
                 timeout=30, what="version 5 running")
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not errors
    assert [r["reloaded"] for r in reports] == [["counter"], ["counter"], [], ["counter"], ["counter"]]
    assert "kept version" in reports[2]["failed"]["counter"]
    # every call ran the plugin exactly once and every run succeeded
    assert len(outcomes) == calls and all(o["ok"] for o in outcomes), [o["error"] for o in outcomes if not o["ok"]]
    # the versions only move forward, and the state counter never skips nor repeats
    versions = [o["result"]["version"] for o in outcomes]
    assert versions == sorted(versions) and set(versions) == {1, 2, 3, 4, 5}
    assert [o["result"]["n"] for o in outcomes] == list(range(1, calls + 1))
    st = host.status("counter")
    assert st["reloads"] == 4 and st["reload_failures"] == 1 and st["errors"] == 0
