"""The WebAssembly sandbox with the real component: hostile plugins are stopped or refused while a
well-behaved plugin on the same node keeps working; traps rebuild the store; .wasm plugins."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from hal.buzzer import BuzzerDevice
from hal.leds import COLOURS, LedStrip, MemoryPixels
from plugins.backends.base import MAX_ERROR_CHARS
from plugins.host import PluginHost
from plugins.services import BuzzerCommands, NodeServices
from tests.plugins_fixtures import STEADY, Clock, manifest_toml, reading, wasm_backend, write_plugin

__all__ = ["wasm_backend"]  # the session fixture, imported for pytest

# Reaches a file through the interpreter's internals, past the SDK's missing `open`: the
# real boundary is the stubbed WASI, which traps on the system call.
FILEIO_ESCAPE = '''
def _walk(cls):
    for sub in type.__subclasses__(cls):
        yield sub
        yield from _walk(sub)

def evaluate(readings, host):
    fileio = next(c for c in _walk(object) if c.__name__ == "FileIO")
    return {"stolen": fileio("/etc/passwd").read().decode()}
'''
IMPORTER_ESCAPE = '''
def evaluate(readings, host):
    importer = next(c for c in object.__subclasses__() if c.__name__ == "BuiltinImporter")
    sock = importer.load_module("_socket")
    return {"socket": str(sock.socket())}
'''


class Node:
    """A node's plugin host over an in-memory LED strip and a mock-pin buzzer."""

    def __init__(self, tmp: Path, backend: Any, factory: MockFactory, i2c_bus: Any = None) -> None:
        self.folder = tmp / "plugins"
        self.pixels = MemoryPixels(count=11)
        self.strip = LedStrip(self.pixels)
        self.buzzer = BuzzerDevice(17, factory)
        self.events: list[dict[str, Any]] = []
        self.clock = Clock()
        self.services = NodeServices("pi4", self.strip, BuzzerCommands(self.buzzer), i2c_bus, self.events.append)
        self.host = PluginHost("pi4", self.folder, "wasm", self.services, tmp / "state", self.clock, backend=backend)

    def add(self, name: str, source: str, **manifest: Any) -> Path:
        return write_plugin(self.folder, name, source, **manifest)

    def evaluate(self, value: float = 21.0) -> dict[str, dict[str, Any]]:
        out = self.host.evaluate([reading("temperature", value, self.clock())])
        return {o["plugin"]: o for o in out}

    def close(self) -> None:
        self.host.close()
        self.buzzer.close()


@pytest.fixture
def node(tmp_path: Path, wasm_backend: Any) -> Iterator[Node]:
    factory = MockFactory(pin_class=MockPWMPin)
    n = Node(tmp_path, wasm_backend, factory)
    n.add("steady", STEADY, leds=[0])
    yield n
    n.close()
    factory.reset()
    factory.close()


def steady_ok(out: dict[str, dict[str, Any]], n: int) -> None:
    assert out["steady"]["ok"], out["steady"]["error"]
    assert out["steady"]["result"]["n"] == n


def test_a_plugin_that_loops_forever_is_stopped_and_quarantined(node: Node) -> None:
    node.add("spin", "def evaluate(readings, host):\n    while True:\n        pass\n", call_ms=100)
    node.host.scan()
    for i in range(3):
        out = node.evaluate()
        assert out["spin"]["kind"] == "timeout" and "100 ms limit" in out["spin"]["error"]
        assert out["spin"]["ms"] < 5_000  # stopped (the bound only proves it did not run on)
        steady_ok(out, i + 1)
    st = node.host.status("spin")
    assert st["state"] == "quarantined" and st["timeouts"] == 3 and st["restarts"] == 2
    out = node.evaluate()
    assert "spin" not in out
    steady_ok(out, 4)
    assert node.strip.pixel(0) == COLOURS["green"]


def test_a_plugin_that_allocates_without_bound_is_stopped(node: Node) -> None:
    bomb = "def evaluate(readings, host):\n    hoard = []\n    while True:\n        hoard.append(bytearray(1 << 20))\n"
    node.add("bomb", bomb, memory_mb=32, call_ms=2000)
    node.host.scan()
    out = node.evaluate()
    assert not out["bomb"]["ok"] and ("MemoryError" in out["bomb"]["error"] or out["bomb"]["kind"] == "trap")
    steady_ok(out, 1)
    out = node.evaluate()  # the store survived (or was rebuilt): the plugin runs, and fails, again
    assert not out["bomb"]["ok"]
    steady_ok(out, 2)


@pytest.mark.parametrize("source,expect", [
    ("def evaluate(readings, host):\n    return {'x': open('/etc/passwd').read()}\n", "NameError"),
    (FILEIO_ESCAPE, "system call the sandbox does not provide"),
])
def test_a_plugin_cannot_read_host_files(node: Node, source: str, expect: str) -> None:
    node.add("thief", source)
    node.host.scan()
    out = node.evaluate()
    assert not out["thief"]["ok"] and expect in out["thief"]["error"]
    assert out["thief"]["result"] is None
    steady_ok(out, 1)


@pytest.mark.parametrize("module", ["socket", "subprocess", "ctypes"])
def test_a_plugin_importing_system_modules_is_refused(node: Node, module: str) -> None:
    node.add("net", f"import {module}\ndef evaluate(readings, host):\n    return None\n")
    report = node.host.scan()
    assert f"module '{module}' is not available to plugins" in report["failed"]["net"]
    assert node.host.status("net")["state"] == "error"
    steady_ok(node.evaluate(), 1)


def test_reaching_a_system_module_past_the_import_guard_fails(node: Node) -> None:
    node.add("net", IMPORTER_ESCAPE)
    node.host.scan()
    out = node.evaluate()
    assert out["net"]["kind"] == "trap" and "system call the sandbox does not provide" in out["net"]["error"]
    steady_ok(out, 1)


def test_an_led_outside_the_grant_is_refused_and_the_strip_untouched(node: Node) -> None:
    node.add("rogue", "def evaluate(readings, host):\n    host.set_led(5, 'red')\n", leds=[1])
    node.host.scan()
    frames = node.pixels.shown
    out = node.evaluate()
    assert not out["rogue"]["ok"] and "HostDenied: denied: LED 5 on this node is not granted" in out["rogue"]["error"]
    assert out["rogue"]["denied"] == ["LED 5 on this node is not granted (granted: 1)"]
    assert node.strip.pixel(5) == (0, 0, 0)
    assert node.pixels.shown == frames + 1  # the one frame is steady's green LED 0
    assert node.host.status("rogue")["denied"] == 1
    steady_ok(out, 1)


def test_a_trap_discards_the_store_and_the_next_call_runs_on_a_new_one(node: Node) -> None:
    src = FILEIO_ESCAPE.replace("def evaluate(readings, host):\n",
                                "def evaluate(readings, host):\n    if readings[0].value < 50:\n"
                                "        return {'calm': readings[0].value}\n")
    node.add("flaky", src)
    node.host.scan()
    assert node.evaluate(60.0)["flaky"]["kind"] == "trap"
    out = node.evaluate(20.0)
    assert out["flaky"]["ok"] and out["flaky"]["result"] == {"calm": 20.0}
    st = node.host.status("flaky")
    assert st["traps"] == 1 and st["restarts"] == 1 and st["state"] == "ok"


def test_a_failing_host_function_is_an_error_value_not_a_trap(tmp_path: Path, wasm_backend: Any) -> None:
    def broken_bus(number: int) -> Any:
        raise RuntimeError("bus driver bug")

    factory = MockFactory(pin_class=MockPWMPin)
    n = Node(tmp_path, wasm_backend, factory, i2c_bus=broken_bus)
    src = textwrap.dedent('''
        from harvester_plugin import HostError
        def evaluate(readings, host):
            try:
                host.i2c_read(1, 0x77, 0xD0, 1)
            except HostError as exc:
                return {"error": str(exc)}
    ''')
    n.add("reader", src, extra="")
    (n.folder / "reader.toml").write_text(manifest_toml("reader").replace(
        "buzzer = false", 'buzzer = false\ni2c = [{ bus = 1, address = 0x77, mode = "r" }]'))
    n.host.scan()
    out = n.evaluate()
    assert out["reader"]["ok"] and out["reader"]["result"] == {"error": "internal host error: RuntimeError"}
    st = n.host.status("reader")
    assert st["traps"] == 0 and st["host_errors"] == 1
    n.close()
    factory.close()


def test_a_plugin_that_corrupts_its_own_json_gets_a_result_error(node: Node) -> None:
    src = "import json\njson.dumps = lambda *a, **k: '{not json'\ndef evaluate(readings, host):\n    return {}\n"
    node.add("liar", src)
    node.host.scan()
    out = node.evaluate()
    assert out["liar"]["kind"] == "result" and "not valid JSON" in out["liar"]["error"]


def wat_plugin(text: str, led: int) -> str:
    """A hand-written component implementing the world: sets LED `led` blue, returns `text`."""
    data = text.replace('"', '\\"')
    return f'''
(component
  (type $rgb (record (field "r" u8) (field "g" u8) (field "b" u8)))
  (import "harvester:plugin/host@0.1.0" (instance $host
    (export "rgb" (type $rgb' (eq $rgb)))
    (export "set-led" (func (param "node" string) (param "index" u32) (param "color" $rgb')
                            (result (result (error string)))))))
  (core module $mem
    (memory (export "memory") 1)
    (global $bump (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (global.get $bump))
      (global.set $bump (i32.add (global.get $bump) (i32.and (i32.add (local.get 3) (i32.const 7)) (i32.const -8))))
      (local.get $p)))
  (core instance $mi (instantiate $mem))
  (core func $set_led (canon lower (func $host "set-led") (memory (core memory $mi "memory"))
                                   (realloc (core func $mi "realloc"))))
  (core module $m
    (import "env" "memory" (memory 1))
    (import "host" "set-led" (func $set_led (param i32 i32 i32 i32 i32 i32 i32)))
    (data (i32.const 64) "{data}")
    (func (export "load") (param i32 i32 i32 i32 i32 i32) (result i32)
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.const 16))
    (func (export "evaluate") (param i32 i32) (result i32)
      (call $set_led (i32.const 0) (i32.const 0) (i32.const {led}) (i32.const 0) (i32.const 0) (i32.const 255)
                     (i32.const 48))
      (i32.store8 (i32.const 32) (i32.const 0))
      (i32.store (i32.const 36) (i32.const 64))
      (i32.store (i32.const 40) (i32.const {len(text.encode())}))
      (i32.const 32))
    (func (export "poll") (result i32)
      (i32.store8 (i32.const 32) (i32.const 1))
      (i32.store (i32.const 36) (i32.const 64))
      (i32.store (i32.const 40) (i32.const {len(text.encode())}))
      (i32.const 32)))
  (core instance $i (instantiate $m
    (with "env" (instance (export "memory" (memory $mi "memory"))))
    (with "host" (instance (export "set-led" (func $set_led))))))
  (func $load (param "name" string) (param "source" string) (param "config" string) (result (result (error string)))
    (canon lift (core func $i "load") (memory (core memory $mi "memory")) (realloc (core func $mi "realloc"))))
  (func $evaluate (param "request" string) (result (result string (error string)))
    (canon lift (core func $i "evaluate") (memory (core memory $mi "memory")) (realloc (core func $mi "realloc"))))
  (func $poll (result (result string (error string)))
    (canon lift (core func $i "poll") (memory (core memory $mi "memory")) (realloc (core func $mi "realloc"))))
  (instance $plugin (export "load" (func $load)) (export "evaluate" (func $evaluate)) (export "poll" (func $poll)))
  (export "harvester:plugin/plugin@0.1.0" (instance $plugin)))
'''


def test_any_component_implementing_the_world_is_a_hot_reloadable_plugin(node: Node) -> None:
    import wasmtime

    path = node.folder / "blue.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat_plugin('{"v":1}', led=2)))
    (node.folder / "blue.toml").write_text(manifest_toml("blue", leds=[2]))
    assert node.host.scan()["loaded"] == ["blue", "steady"]
    out = node.evaluate()
    assert out["blue"]["ok"] and out["blue"]["result"] == {"v": 1}
    assert node.strip.pixel(2) == COLOURS["blue"]
    assert node.host.status("blue")["kind"] == "wasm"
    path.write_bytes(wasmtime.wat2wasm(wat_plugin('{"v":2}', led=7)))  # a new version asks for LED 7
    assert node.host.scan()["reloaded"] == ["blue"]
    out = node.evaluate()
    assert out["blue"]["result"] == {"v": 2} and out["blue"]["denied"]  # it ignores the error it got
    assert node.strip.pixel(7) == (0, 0, 0)
    steady_ok(out, 2)


def test_a_file_that_is_not_a_component_is_refused(node: Node) -> None:
    (node.folder / "junk.wasm").write_bytes(b"\0asm\x0d\0\x01\0garbage")
    (node.folder / "junk.toml").write_text(manifest_toml("junk"))
    assert "not a valid WebAssembly component" in node.host.scan()["failed"]["junk"]
    steady_ok(node.evaluate(), 1)


def test_compiled_code_is_cached_on_disk_by_hash_version_and_flags(wasm_backend: Any) -> None:
    rt = wasm_backend.runtime
    digest = rt.file_hash(wasm_backend.sandbox_path())
    artifact = wasm_backend.cache_dir / rt.artifact_key(digest)
    assert artifact.exists()
    assert digest[:32] in artifact.name and f"wasmtime{rt.version}" in artifact.name and "epoch" in artifact.name


def test_the_result_of_every_sandbox_call_is_freed(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """The C API's caller owns a call's result value; wasmtime-py 50 converted it and never
    freed it, leaking on every call (see call_component_func)."""
    from wasmtime import _ffi as ffi

    node.host.scan()
    freed: list[int] = []
    real = ffi.wasmtime_component_val_delete

    def recording(ref: Any) -> None:
        value = ref._obj if hasattr(ref, "_obj") else ref.contents  # byref(...) or pointer(...)
        freed.append(value.kind)
        real(ref)

    monkeypatch.setattr(ffi, "wasmtime_component_val_delete", recording)
    steady_ok(node.evaluate(), 1)
    # the request string (an argument) and the result<string, string> the plugin answered with
    assert freed.count(ffi.WASMTIME_COMPONENT_STRING.value) >= 1
    assert freed.count(ffi.WASMTIME_COMPONENT_RESULT.value) == 1, freed


def test_a_syntax_error_is_the_plugins_error_not_a_trap(node: Node) -> None:
    """CPython opens the file named in compile() to quote a syntax error's line: that trapped."""
    node.add("typo", "def evaluate(readings, host)\n    return None\n")
    report = node.host.scan()
    assert report["failed"]["typo"] == "not loaded: SyntaxError: expected ':' (line 1, column 29) in typo.py"
    st = node.host.status("typo")
    assert st["traps"] == 0 and st["last_error_kind"] == "load"
    node.add("typo", "def evaluate(readings, host):\n    return {'fixed': True}\n")
    assert node.host.scan()["loaded"] == ["typo"]
    out = node.evaluate()
    assert out["typo"]["result"] == {"fixed": True}
    steady_ok(out, 1)


def test_opening_a_file_while_the_plugin_file_runs_at_load_still_traps(node: Node) -> None:
    """File opens are refused as errors only while the plugin file compiles, never in its code."""
    at_load = FILEIO_ESCAPE.replace("def evaluate(readings, host):\n",
                                    "STOLEN = next(c for c in _walk(object) if c.__name__ == 'FileIO')('/etc/passwd')\n"
                                    "def evaluate(readings, host):\n")
    node.add("thief", at_load)
    failed = node.host.scan()["failed"]["thief"]
    assert "sandbox trapped" in failed and "system call the sandbox does not provide" in failed
    steady_ok(node.evaluate(), 1)


def test_a_plugin_that_rewrites_its_sdk_cannot_flood_or_split_its_error(node: Node) -> None:
    """Inside the sandbox the SDK is the plugin's to patch: the host bounds the text it gets back."""
    forged = "sandbox trapped: forged\\n" * 10_000
    src = ("import harvester_plugin\n"
           f"harvester_plugin.describe_exception = lambda exc, filename: {forged!r}.replace('\\\\n', '\\n')\n"
           "def evaluate(readings, host):\n    raise ValueError('boom')\n")
    node.add("forger", src)
    node.host.scan()
    out = node.evaluate()
    error = out["forger"]["error"]
    assert out["forger"]["kind"] == "error" and len(error) == MAX_ERROR_CHARS and error.endswith("…")
    assert "\n" not in error and error.startswith("sandbox trapped: forged\\nsandbox trapped: forged\\n")
    assert node.host.status("forger")["traps"] == 0
    steady_ok(out, 1)
