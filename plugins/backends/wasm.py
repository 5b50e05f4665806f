"""WebAssembly backend: every plugin in its own wasmtime store of the generic Python sandbox.

This is the only module that imports wasmtime, and only when a WASM backend is created,
so a native-profile node never loads it. Per plugin: one store with a linear-memory
limit, an epoch deadline on every call (a ticker advances the engine's epoch every
5 ms while any call runs), host functions that answer refusals and failures as `result`
errors and never raise into the guest (a raising host function traps the guest and
wasmtime-py passes the exception through one process-wide variable). After a trap the
store is dead, so it is dropped and rebuilt by `restart()`.

Compiled code is cached on disk, keyed by the component's hash, the wasmtime version and
the engine flags, with a sha256 beside it, and loaded with `deserialize_file` (mapped,
+6.6 MB, against +38.8 MB for deserialising bytes). wasmtime refuses an artifact made by
another version or for other CPU features, but maps damaged code as it is, so the checksum
is what keeps a flipped bit from becoming a crash; either way the component is compiled
again. Where the sandbox comes from: plugins.sandbox.install (shipped with the release and
precompiled at install time on boards), else plugins.sandbox.build (built here).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from hal.files import write_atomic
from plugins.backends.base import EMPTY_REQUEST, Backend, PluginInstance, PluginSource, plugin_error_text
from plugins.errors import PluginCallError, PluginLoadError, PluginTimeout, PluginTrap, SandboxUnavailable
from plugins.hostapi import HostApi, HostRefusal

log = logging.getLogger(__name__)

TICK_S = 0.005
ENGINE_FLAGS = "epoch"  # part of the artifact key: an epoch artifact does not load into a fuel engine
PLUGIN_EXPORT = "harvester:plugin/plugin@0.1.0"
HOST_IMPORT = "harvester:plugin/host@0.1.0"
ENV_CACHE = "HARVESTER_WASM_CACHE"
# A compiled sandbox is 36 MB; every edit of the guest sources makes a new one. Keep the
# cache within this many bytes, dropping the least recently used artifacts first.
CACHE_BUDGET_BYTES = 256 * 1024 * 1024


def _wasmtime() -> Any:
    try:
        import wasmtime
        import wasmtime.component
    except ImportError as exc:
        raise SandboxUnavailable("wasmtime is not installed; install the 'wasm' extra "
                                 "(pip install 'wasi-harvester[wasm]') or run this node with profile 'native'") from exc
    return wasmtime


class EpochTicker:
    """Advances the engine's epoch every TICK_S, but only while some call is running."""

    def __init__(self, engine: Any, period: float = TICK_S) -> None:
        self._engine = engine
        self.period = period
        self._cond = threading.Condition()
        self._running = 0
        self._thread = threading.Thread(target=self._run, name="wasm-epoch", daemon=True)
        self._thread.start()

    def enter(self) -> None:
        """A call starts."""
        with self._cond:
            self._running += 1
            if self._running == 1:
                self._cond.notify()

    def leave(self) -> None:
        """A call ended."""
        with self._cond:
            self._running -= 1

    def ticks(self, limit_ms: int) -> int:
        """Deadline in ticks: never before `limit_ms`, at most one tick after it."""
        return math.ceil(limit_ms / 1000 / self.period) + 1

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._running == 0:
                    self._cond.wait()
            time.sleep(self.period)
            self._engine.increment_epoch()


class WasmRuntime:
    """One engine per process, its ticker, and compiled components shared by every plugin."""

    _singleton: WasmRuntime | None = None
    _singleton_lock = threading.Lock()

    @classmethod
    def get(cls) -> WasmRuntime:
        """The process-wide runtime (created on first use)."""
        with cls._singleton_lock:
            if cls._singleton is None:
                cls._singleton = cls()
            return cls._singleton

    def __init__(self) -> None:
        wt = _wasmtime()
        self.wt = wt
        config = wt.Config()
        config.epoch_interruption = True
        self.engine = wt.Engine(config)
        self.version = metadata.version("wasmtime")
        self.ticker = EpochTicker(self.engine)
        self._lock = threading.Lock()
        self._components: dict[str, Any] = {}
        self._hashes: dict[Path, tuple[tuple[int, int], str]] = {}

    def file_hash(self, path: Path) -> str:
        """sha256 of a component file (re-hashed only when its size or mtime changes)."""
        st = path.stat()
        stamp = (st.st_size, st.st_mtime_ns)
        cached = self._hashes.get(path)
        if cached and cached[0] == stamp:
            return cached[1]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self._hashes[path] = (stamp, digest)
        return digest

    def artifact_key(self, digest: str) -> str:
        """File name of the compiled artifact for a component hash."""
        return f"{digest[:32]}-wasmtime{self.version}-{ENGINE_FLAGS}.cwasm"

    def component(self, path: Path, cache_dir: Path) -> Any:
        """The compiled component for a .wasm file, from memory, the disk cache, or compiled now."""
        digest = self.file_hash(path)
        with self._lock:
            comp = self._components.get(digest)
            if comp is None:
                comp, _ = self._load_or_compile(path, cache_dir / self.artifact_key(digest))
                self._components[digest] = comp
            return comp

    def precompile(self, path: Path, cache_dir: Path) -> tuple[Path, bool]:
        """Leave a valid artifact for `path` in `cache_dir` (the install step of a release).
        Returns the artifact and whether it had to be compiled now."""
        digest = self.file_hash(path)
        artifact = cache_dir / self.artifact_key(digest)
        with self._lock:
            comp, compiled = self._load_or_compile(path, artifact)
            self._components[digest] = comp
        if not artifact.exists():
            raise OSError(f"{artifact} could not be written (see the warning above)")
        return artifact, compiled

    def _load_or_compile(self, path: Path, artifact: Path) -> tuple[Any, bool]:
        comp = self._load(artifact)
        return (comp, False) if comp is not None else (self._compile(path, artifact), True)

    def _load(self, artifact: Path) -> Any:
        """The cached artifact, or None when it is missing, damaged or made for another wasmtime or CPU."""
        if not artifact.exists():
            return None
        started = time.monotonic()
        if artifact_digest(artifact) != _read_checksum(artifact):
            log.warning("compiled artifact %s does not match its checksum (or has none); compiling again", artifact.name)
            return None
        try:
            comp = self.wt.component.Component.deserialize_file(self.engine, str(artifact))
        except self.wt.WasmtimeError as exc:
            log.warning("compiled artifact %s unusable here (%s); compiling again",
                        artifact.name, str(exc).replace("\n", " "))
            return None
        # Recently used: the pruning keeps it. A release's precompiled sandbox is read-only to
        # the service (systemd's ProtectSystem) and never pruned.
        with contextlib.suppress(OSError):
            os.utime(artifact)
        log.info("loaded precompiled %s in %.2f s", artifact, time.monotonic() - started)
        return comp

    def _compile(self, path: Path, artifact: Path) -> Any:
        started = time.monotonic()
        log.info("compiling %s (%.1f MB) for wasmtime %s; cached afterwards in %s",
                 path.name, path.stat().st_size / 1e6, self.version, artifact.parent)
        try:
            comp = self.wt.component.Component.from_file(self.engine, str(path))
        except self.wt.WasmtimeError as exc:
            raise PluginLoadError(f"{path.name} is not a valid WebAssembly component: {exc}") from None
        try:
            save_artifact(artifact, comp.serialize())
        except OSError as exc:
            log.warning("compiled %s in %.1f s but cannot cache it in %s (%s): this process keeps it in memory",
                        path.name, time.monotonic() - started, artifact.parent, exc)
            return comp
        log.info("compiled %s in %.1f s", path.name, time.monotonic() - started)
        _prune(artifact.parent, keep=artifact)
        return self.wt.component.Component.deserialize_file(self.engine, str(artifact))


def _checksum_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".sha256")


def artifact_digest(artifact: Path) -> str:
    """sha256 of a compiled artifact (36 MB for the sandbox: about 20 ms on x86-64)."""
    with open(artifact, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _read_checksum(artifact: Path) -> str | None:
    try:
        return _checksum_path(artifact).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def save_artifact(artifact: Path, data: bytes) -> None:
    """Write an artifact and its checksum; a reader never sees half of either."""
    artifact.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(artifact, data, mode=0o644)
    write_atomic(_checksum_path(artifact), hashlib.sha256(data).hexdigest().encode() + b"\n", mode=0o644)


def _prune(cache_dir: Path, keep: Path, budget: int = CACHE_BUDGET_BYTES) -> None:
    """Delete least recently used artifacts until the cache fits the budget (never `keep`)."""
    files = []
    for f in cache_dir.glob("*.cwasm"):
        try:
            st = f.stat()
        except FileNotFoundError:
            continue  # another process pruned it first
        files.append((st.st_mtime, st.st_size, f))
    total = sum(size for _, size, _ in files)
    for _, size, f in sorted(files):
        if total <= budget:
            break
        if f != keep:
            f.unlink(missing_ok=True)
            _checksum_path(f).unlink(missing_ok=True)
            total -= size
            log.info("dropped compiled artifact %s from the cache (%.0f MB)", f.name, size / 1e6)


def call_component_func(func: Any, store: Any, *args: Any) -> Any:
    """Call an exported component function, as wasmtime-py's `Func.__call__` does, and free
    the result value afterwards.

    Under wasmtime's C API the caller owns a call's result value. wasmtime-py 50.0.1
    converts it to Python and never frees it, so every call leaked the C copy of the
    plugin's JSON answer: 1.7 MB of malloc heap per 16,000 evaluates, about +5 MB an hour
    on the demo's pi4 (bench/bench_plugins.py prints the growth). The rest is the
    library's own code path, through the same private helpers, pinned by wasmtime<51."""
    from ctypes import byref, pointer

    from wasmtime import _ffi as ffi
    from wasmtime.component._enter import enter_wasm

    fty = func.type(store)
    if len(args) != len(fty.params):
        raise TypeError(f"{len(args)} arguments for a function of {len(fty.params)} parameters")
    params = (ffi.wasmtime_component_val_t * len(args))()
    result = ffi.wasmtime_component_val_t() if fty.result is not None else None
    converted = 0
    try:
        for (_name, ty), value in zip(fty.params, args, strict=True):
            ty.convert_to_c(store, value, pointer(params[converted]))
            converted += 1
        enter_wasm(lambda: ffi.wasmtime_component_func_call(
            byref(func._func), store._context(), params, converted,
            None if result is None else byref(result), 0 if result is None else 1))
        if result is None:
            return None
        try:
            return fty.result.convert_from_c(result)
        finally:
            ffi.wasmtime_component_val_delete(byref(result))
    finally:
        for i in range(converted):
            ffi.wasmtime_component_val_delete(byref(params[i]))


def _ok_unit(value: Any) -> None:
    return None


def _host_functions(api: HostApi, variant: Any) -> dict[str, Any]:
    """The `host` interface bound to one plugin's HostApi; no function ever raises."""

    def guard(fn: Any, lower: Any, tagged: bool = False) -> Any:
        def host_function(_store: Any, *args: Any) -> Any:
            try:
                value = fn(*args)
            except HostRefusal as exc:
                return variant("err", str(exc)) if tagged else str(exc)
            except Exception as exc:  # our bug must not become the guest's trap
                api.env.count("host_errors")
                log.exception("plugin %s: host function %s failed", api.name, getattr(fn, "__name__", fn))
                message = f"internal host error: {type(exc).__name__}"
                return variant("err", message) if tagged else message
            return variant("ok", lower(value)) if tagged else lower(value)
        return host_function

    def now(_store: Any) -> float:
        try:
            return api.now()
        except Exception:  # an f64 cannot carry an error; the wall clock is the honest fallback
            log.exception("plugin %s: the node clock failed", api.name)
            return time.time()

    def alert(a: Any) -> dict[str, Any]:
        return {"id": a.id, "severity": a.severity, "message": a.message, "node": a.node,
                "sensor": a.sensor, "quantity": a.quantity, "value": a.value}

    # For result<_, string> and result<list<u8>, string> the ok and error cases have
    # different Python types, so wasmtime-py takes them untagged (None/bytes vs str);
    # result<option<string>, string> is ambiguous and must be a tagged Variant.
    return {
        "log": guard(api.log, _ok_unit),
        "now": now,
        "set-led": guard(lambda node, index, c: api.set_led(node, index, (c.r, c.g, c.b)), _ok_unit),
        "beep": guard(api.beep, _ok_unit),
        "play": guard(api.play, _ok_unit),
        "i2c-read": guard(api.i2c_read, bytes),
        "i2c-write": guard(lambda bus, addr, reg, data: api.i2c_write(bus, addr, reg, bytes(data)), _ok_unit),
        "state-get": guard(api.state_get, lambda v: v, tagged=True),
        "state-set": guard(api.state_set, _ok_unit),
        "raise-alert": guard(lambda a: api.raise_alert(alert(a)), _ok_unit),
        "clear-alert": guard(api.clear_alert, _ok_unit),
    }


def _trap(exc: Exception, limit_ms: int) -> PluginTrap:
    """Classify a wasmtime error from a call: the epoch deadline, or another trap."""
    text = str(exc)
    if "wasm trap: interrupt" in text:
        return PluginTimeout(f"stopped after exceeding its {limit_ms} ms limit")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    cause = next((ln for ln in reversed(lines) if ln.startswith("wasm trap")), lines[-1] if lines else text)
    # A trapping WASI stub shows up as a libc frame: name it, it says what the plugin tried.
    wasi = next((ln.split("!", 1)[1] for ln in lines if "libc.so!" in ln), None)
    hint = f" (the plugin made a system call the sandbox does not provide: {wasi})" if wasi else ""
    return PluginTrap(f"sandbox trapped: {cause}{hint}")


class WasmInstance(PluginInstance):
    """One plugin in its own store of a component (the sandbox, or the plugin's own .wasm)."""

    def __init__(self, source: PluginSource, api: HostApi, runtime: WasmRuntime, component: Any) -> None:
        super().__init__(source, api)
        self._rt = runtime
        self._component = component
        wt = runtime.wt
        self._linker = wt.component.Linker(runtime.engine)
        with self._linker.root() as root, root.add_instance(HOST_IMPORT) as host:
            for name, fn in _host_functions(api, wt.component.Variant).items():
                host.add_func(name, fn)
        self._store: Any = None
        self._funcs: dict[str, Any] = {}

    @property
    def alive(self) -> bool:
        """False after a trap, until restart()."""
        return self._store is not None

    def _discard(self) -> None:
        store, self._store, self._funcs = self._store, None, {}
        if store is not None:
            store.close()

    def _invoke(self, func: Any, limit_ms: int, *args: Any) -> Any:
        store = self._store
        store.set_epoch_deadline(self._rt.ticker.ticks(limit_ms))
        self._rt.ticker.enter()
        try:
            return call_component_func(func, store, *args)
        except self._rt.wt.WasmtimeError as exc:
            self._discard()
            raise _trap(exc, limit_ms) from None
        finally:
            self._rt.ticker.leave()

    def _boot(self) -> None:
        self._discard()
        wt, m = self._rt.wt, self.source.manifest
        store = wt.Store(self._rt.engine)
        store.set_limits(memory_size=m.limits.memory_mb << 20)
        # Instantiation runs the component's start code too: give it the load deadline.
        store.set_epoch_deadline(self._rt.ticker.ticks(m.limits.load_ms))
        try:
            instance = self._linker.instantiate(store, self._component)
            index = instance.get_export_index(store, PLUGIN_EXPORT)
            funcs = {}
            for name in ("load", "evaluate", "poll"):
                fidx = None if index is None else instance.get_export_index(store, name, index)
                func = None if fidx is None else instance.get_func(store, fidx)
                if func is None:
                    raise PluginLoadError(f"{self.source.path.name} does not export {PLUGIN_EXPORT}#{name}")
                funcs[name] = func
        except wt.WasmtimeError as exc:
            store.close()
            raise PluginLoadError(f"cannot instantiate the sandbox: {exc}") from None
        except PluginLoadError:
            store.close()
            raise
        self._store, self._funcs = store, funcs
        error = self._invoke(funcs["load"], m.limits.load_ms, self.source.name, self.source.text, m.config_json())
        if error is not None:  # result<_, string>: None is ok, a string is the plugin's error
            self._discard()
            raise PluginLoadError(plugin_error_text(str(error)))

    def call(self, method: str, arg: str | None = None) -> str:
        """Call evaluate/poll with the manifest's time limit."""
        if self._store is None:
            raise PluginTrap("sandbox not running (trapped earlier; restart pending)")
        func = self._funcs.get(method)
        if func is None:
            raise PluginCallError(f"unknown plugin method {method!r}")
        limit = self.source.manifest.limits.call_ms
        out = self._invoke(func, limit, arg or EMPTY_REQUEST) if method == "evaluate" else self._invoke(func, limit)
        tag, payload = getattr(out, "tag", None), getattr(out, "payload", None)
        if tag == "ok":
            return payload
        if tag == "err":
            raise PluginCallError(plugin_error_text(str(payload)))
        raise PluginCallError(f"{method} returned {type(out).__name__}, not a result")

    def close(self) -> None:
        """Drop the store (and with it the instance's memory)."""
        self._discard()


class WasmBackend(Backend):
    """Loads .py plugins into the generic sandbox and .wasm plugins as their own components.

    The sandbox is the release's shipped component when it has one (its precompiled artifact
    sits beside it), else one built here with componentize-py (developer machines); a board
    with neither gets a SandboxUnavailable that says how to get one."""

    name = "wasm"

    def __init__(self, sandbox: Path | None = None, cache_dir: Path | None = None) -> None:
        from plugins.sandbox.install import find_shipped

        self.runtime = WasmRuntime.get()
        self._sandbox = sandbox
        self._shipped = find_shipped() if sandbox is None else None
        default = self._shipped.compiled_dir if self._shipped is not None else self._default_cache()
        self.cache_dir = Path(cache_dir or os.environ.get(ENV_CACHE) or default)

    @staticmethod
    def _default_cache() -> Path:
        from plugins.sandbox.build import build_dir

        return build_dir() / "compiled"

    def sandbox_path(self) -> Path:
        """The sandbox component: the shipped one, or one built now if it is missing (about 7 s)."""
        if self._sandbox is None:
            self._sandbox = self._locate()
        return self._sandbox

    def _locate(self) -> Path:
        from plugins.sandbox import build
        from plugins.sandbox.install import NO_SANDBOX, mismatch

        shipped = self._shipped
        if shipped is not None:
            problem = mismatch(shipped, self.runtime.file_hash(shipped.component))
            if problem is None:
                return shipped.component
            if not build.can_build():
                raise SandboxUnavailable(problem)
            log.warning("%s; building one here instead", problem)
        elif not build.can_build():
            raise SandboxUnavailable(NO_SANDBOX)
        return build.ensure_built()

    def _create(self, source: PluginSource, api: HostApi) -> PluginInstance:
        path = source.path if source.kind == "wasm" else self.sandbox_path()
        return WasmInstance(source, api, self.runtime, self.runtime.component(path, self.cache_dir))
