"""Shared set-up for the plugin tests: plugin folders, manifests, readings, an injectable clock.

Test modules import the fixtures they use from here (`from tests.plugins_fixtures import
wasm_backend`). The compiled sandbox is cached process-wide by plugins.backends.wasm and
on disk, so every module shares one compile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hal.readings import Reading
from tests.clocks import ManualClock


class Clock(ManualClock):
    """A settable clock for PluginHost(clock=...)."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        super().__init__(t)


def manifest_toml(name: str, version: str = "1.0", leds: list[int] | None = None, buzzer: bool = False,
                  quantities: list[str] | None = None, call_ms: int = 200, memory_mb: int = 32,
                  config: dict[str, Any] | None = None, extra: str = "") -> str:
    """A manifest as TOML text."""
    lines = ["[plugin]", f'name = "{name}"', f'version = "{version}"']
    if quantities is not None:
        lines.append(f"quantities = {json.dumps(quantities)}")
    lines += ["[permissions]", f"leds = {json.dumps(leds or [])}", f"buzzer = {'true' if buzzer else 'false'}"]
    lines += ["[limits]", f"call_ms = {call_ms}", f"memory_mb = {memory_mb}"]
    lines.append(extra)
    if config:
        lines.append("[config]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in config.items()]
    return "\n".join(lines) + "\n"


def write_plugin(folder: Path, name: str, source: str, manifest: str | None = None, **manifest_args: Any) -> Path:
    """Write NAME.py and NAME.toml into `folder`; returns the .py path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    (folder / f"{name}.toml").write_text(manifest or manifest_toml(name, **manifest_args), encoding="utf-8")
    return path


def reading(quantity: str, value: float | None, ts: float, sensor: str = "dht22", node: str = "pi4",
            quality: str = "ok") -> Reading:
    """A reading (an unavailable one when value is None)."""
    if value is None:
        return Reading.failed(node, sensor, quantity, ts, "no answer")
    return Reading.measured(node, sensor, quantity, value, ts, quality=quality)


# A plugin that behaves: counts its calls in host state and keeps LED 0 green.
STEADY = '''
def evaluate(readings, host):
    n = host.state_get("n", 0) + 1
    host.state_set("n", n)
    host.set_led(0, "green")
    return {"n": n, "count": len(readings)}
'''


@pytest.fixture(scope="session")
def wasm_backend() -> Any:
    """The WASM backend over the sandbox component (built and compiled once, then cached)."""
    pytest.importorskip("wasmtime")
    from plugins.backends.wasm import WasmBackend

    backend = WasmBackend()
    backend.runtime.component(backend.sandbox_path(), backend.cache_dir)
    return backend
