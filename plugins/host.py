"""PluginHost: every plugin of one node — discovery, hot reload, evaluation, polling, status, alerts.

A plain domain object (no Pyro5): the node agent feeds it readings and serves it through
actors.devices.plugin_runner.PluginsActor. Plugins live in one folder as NAME.py or NAME.wasm with
NAME.toml beside it. `scan()` (the agent runs it every few seconds) loads new files,
reloads changed ones beside the running version, and unloads removed ones.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hal.errors import ReadingError
from hal.files import write_json_atomic
from hal.readings import Quantity, Reading, declare, forget
from plugins.alerts import AlertBook
from plugins.backends import Backend, PluginSource, make_backend
from plugins.errors import ManifestError, PluginError, SandboxUnavailable, UnknownPlugin
from plugins.folder import BUNDLED_DIR, SUFFIXES, is_candidate, seed_bundled
from plugins.hostapi import PluginEnv
from plugins.manifest import NAME_RE, read_manifest
from plugins.samples import MAX_SAMPLES, Sample, Samples
from plugins.services import NodeServices, Services
from plugins.slot import PluginSlot
from plugins.state import PluginState

log = logging.getLogger(__name__)

__all__ = ["BUNDLED_DIR", "MAX_SAMPLES", "SUFFIXES", "DisabledSet", "PluginHost", "seed_bundled"]
Stamp = tuple[tuple[int, int], tuple[int, int]]


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


class DisabledSet:
    """The plugins an operator disabled, kept in a JSON file across restarts (callers lock)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.names: set[str] = self._read()

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def set(self, name: str, disabled: bool) -> None:
        """Disable or enable `name`, and write the file."""
        (self.names.add if disabled else self.names.discard)(name)
        if self.path is not None:
            write_json_atomic(self.path, sorted(self.names))

    def _read(self) -> set[str]:
        if self.path is None or not self.path.exists():
            return set()
        try:
            return set(json.loads(self.path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("%s unreadable (%s); every plugin starts enabled", self.path, exc)
            return set()


class PluginHost:
    """The plugins of one node. Thread-safe: evaluate() runs from poll jobs, scan() from its own job."""

    def __init__(self, node: str, plugin_dir: Path | str, profile: str = "wasm", services: Services | None = None,
                 state_dir: Path | str | None = None, clock: Callable[[], float] = time.time,
                 backend: Backend | None = None, samples: Samples | None = None) -> None:
        self.node = node
        self.plugin_dir = Path(plugin_dir)
        self.profile = profile
        self.services: Services = services or NodeServices(node)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.clock = clock
        self.alerts = AlertBook(node, self.services.alert, clock,
                                self.state_dir / "alerts.json" if self.state_dir else None)
        self._backend = backend
        self._backend_error: PluginError | None = None
        self._lock = threading.RLock()
        self._scan_lock = threading.Lock()
        self._slots: dict[str, PluginSlot] = {}
        self._stamps: dict[str, Stamp] = {}
        self._samples = samples or Samples()  # a lazy host hands over what it kept before it existed
        self._disabled = DisabledSet(self.state_dir / "disabled.json" if self.state_dir else None)

    # -- backend and slots -------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The backend for this node's profile, created on first use (wasm imports wasmtime then)."""
        with self._lock:
            if self._backend is None:
                if self._backend_error is not None:
                    raise self._backend_error
                try:
                    self._backend = make_backend(self.profile)
                except SandboxUnavailable as exc:
                    self._backend_error = exc  # said once; every plugin's status repeats it
                    log.error("plugins cannot run on %s: %s", self.node, exc)
                    raise
            return self._backend

    def _slot(self, name: str) -> PluginSlot:
        with self._lock:
            slot = self._slots.get(name)
            if slot is None:
                state = PluginState(self.state_dir / "state" / f"{name}.json" if self.state_dir else None)
                env = PluginEnv(name, self.services, state, self.alerts, self.clock)
                slot = PluginSlot(name, env, self._LazyBackend(self))
                slot.enabled = name not in self._disabled
                self._slots[name] = slot
            return slot

    class _LazyBackend(Backend):
        """Defers creating the real backend until a plugin is loaded (and names it in status)."""

        def __init__(self, host: PluginHost) -> None:
            self._host = host
            self.name = host.profile

        def load(self, source: PluginSource, api: Any) -> Any:
            return self._host.backend.load(source, api)

        def _create(self, source: PluginSource, api: Any) -> Any:
            raise AssertionError("load() delegates")

    def get(self, name: str) -> PluginSlot:
        """The slot of a known plugin, or UnknownPlugin."""
        with self._lock:
            slot = self._slots.get(name)
        if slot is None:
            raise UnknownPlugin(f"no plugin {name!r} on {self.node}; known: {', '.join(self.names()) or 'none'}")
        return slot

    def names(self) -> list[str]:
        """Known plugin names, sorted."""
        with self._lock:
            return sorted(self._slots)

    # -- discovery and hot reload ----------------------------------------------------------------
    def _discover(self) -> tuple[dict[str, Path], dict[str, str]]:
        found: dict[str, Path] = {}
        problems: dict[str, str] = {}
        if not self.plugin_dir.is_dir():
            return found, problems
        for path in sorted(self.plugin_dir.iterdir()):
            if not is_candidate(path):
                continue
            name = path.stem
            if not NAME_RE.match(name):
                problems[name] = f"{path.name}: plugin names match [a-z][a-z0-9_]{{0,47}}"
            elif name in found:
                problems[name] = f"both {found[name].name} and {path.name} exist; keep one"
            else:
                found[name] = path
        for name in problems:
            found.pop(name, None)
        return found, problems

    def scan(self) -> dict[str, Any]:
        """Load new plugin files, reload changed ones, unload removed ones; report what happened."""
        with self._scan_lock:
            found, problems = self._discover()
            report: dict[str, Any] = {"loaded": [], "reloaded": [], "removed": [], "failed": {}}
            for name in set(self.names()) - set(found) - set(problems):
                self.unload(name, "plugin file removed")
                report["removed"].append(name)
            for name, message in problems.items():
                report["failed"][name] = self._slot(name).refused(None, ManifestError(message))
            for name, path in sorted(found.items()):
                manifest_path = path.with_suffix(".toml")
                try:
                    stamp = (_stat(path), _stat(manifest_path) if manifest_path.exists() else (0, 0))
                except FileNotFoundError:
                    continue  # removed between listing and stat: the next scan sees it gone
                if self._stamps.get(name) == stamp:
                    continue
                self._stamps[name] = stamp
                self._install(name, path, report)
            return report

    def _install(self, name: str, path: Path, report: dict[str, Any], force: bool = False) -> None:
        slot = self._slot(name)
        try:
            manifest, raw = read_manifest(path.with_suffix(".toml"), expected_name=name)
            source = PluginSource.read(path, manifest, raw)
        except (ManifestError, OSError, UnicodeDecodeError) as exc:
            report["failed"][name] = slot.refused(None, exc)
            return
        if not force and source.fingerprint in (slot.tried, slot.source.fingerprint if slot.source else None):
            return  # touched, not changed (or the same broken edit again)
        replacing = slot.source is not None
        try:
            for q in manifest.declares:  # before it runs: its sensor's readings need them
                declare(q, f"plugin {name}")
        except ReadingError as exc:
            report["failed"][name] = slot.refused(source.fingerprint, exc)
            return
        try:
            slot.install(source, self._sample_list())
        except PluginError as exc:
            report["failed"][name] = slot.refused(source.fingerprint, exc)
            return
        report["reloaded" if replacing else "loaded"].append(name)

    def reload(self, name: str | None = None) -> dict[str, Any]:
        """Re-read one plugin from disk now (or scan everything); a quarantine lifts only on a changed file."""
        if name is None:
            return self.scan()
        slot = self.get(name)
        report: dict[str, Any] = {"loaded": [], "reloaded": [], "removed": [], "failed": {}}
        path = next((p for p in (self.plugin_dir / f"{name}{s}" for s in SUFFIXES) if p.exists()), None)
        if path is None:
            self.unload(name, "plugin file removed")
            report["removed"].append(name)
            return report
        with self._scan_lock:
            if slot.quarantined and slot.source is not None:
                try:
                    unchanged = PluginSource.read(path, slot.source.manifest, path.with_suffix(".toml").read_bytes()
                                                  ).fingerprint == slot.source.fingerprint
                except OSError:
                    unchanged = False
                if unchanged:
                    report["failed"][name] = "quarantined until its file changes"
                    return report
            self._install(name, path, report, force=True)
        return report

    def unload(self, name: str, reason: str) -> None:
        """Stop and forget a plugin; its active alerts are cleared with `reason`."""
        with self._lock:
            slot = self._slots.pop(name, None)
            self._stamps.pop(name, None)
        if slot is not None:
            slot.close()
            forget(f"plugin {name}")
            self.alerts.clear_plugin(name, reason)
            log.info("plugin %s unloaded: %s", name, reason)

    def declared(self) -> list[Quantity]:
        """The quantities this node's loaded plugins declare (their manifests' [[quantities]])."""
        with self._lock:
            slots = list(self._slots.values())
        return [q for slot in slots if slot.source is not None for q in slot.source.manifest.declares]

    def set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        """Enable or disable a plugin (remembered across restarts); disabling clears its alerts."""
        slot = self.get(name)
        with slot.lock:
            slot.enabled = enabled
        with self._lock:
            self._disabled.set(name, disabled=not enabled)
        if not enabled:
            self.alerts.clear_plugin(name, "plugin disabled")
        return slot.status()

    # -- running -----------------------------------------------------------------------------
    def _sample_list(self) -> list[Sample]:
        return self._samples.list()

    def evaluate(self, readings: Iterable[Reading | dict[str, Any]], dry_run: bool = False,
                 only: str | None = None) -> list[dict[str, Any]]:
        """Run every enabled plugin concerned by this batch (one node's readings); one outcome per plugin run."""
        batch = self._samples.batch(readings, keep=not dry_run)
        if batch is None:
            return []
        text, quantities, node = batch
        with self._lock:
            slots = [self._slots[n] for n in sorted(self._slots) if only is None or n == only]
        if only is not None and not slots:
            raise UnknownPlugin(f"no plugin {only!r} on {self.node}")
        outcomes = (slot.evaluate(text, quantities, node, dry_run) for slot in slots)
        return [o for o in outcomes if o is not None]

    def evaluate_latest(self, dry_run: bool = True, only: str | None = None) -> list[dict[str, Any]]:
        """Evaluate on demand: the latest batch of every sensor seen, a dry run unless told otherwise."""
        outcomes = []
        for text, _quantities, _node in self._sample_list():
            outcomes.extend(self.evaluate(json.loads(text), dry_run=dry_run, only=only))
        return outcomes

    def poll_due(self) -> list[Reading]:
        """Poll every plugin sensor whose interval has passed; returns the readings."""
        now = self.clock()
        readings: list[Reading] = []
        with self._lock:
            slots = list(self._slots.values())
        for slot in slots:
            sensor = slot.source.manifest.sensor if slot.source else None
            if sensor is None or (slot.last_poll is not None and now - slot.last_poll < sensor.interval):
                continue
            _outcome, got = slot.poll()
            readings.extend(got)
        return readings

    def poll(self, name: str) -> dict[str, Any]:
        """Poll one plugin's sensor now; returns the outcome with its readings as dicts."""
        outcome, readings = self.get(name).poll()
        return {**outcome, "readings": [r.to_dict() for r in readings]}

    def acknowledge(self, alert_id: str | None = None, plugin: str | None = None) -> list[dict[str, Any]]:
        """Acknowledge active alerts and silence the buzzers their plugins may drive."""
        events = self.alerts.acknowledge(alert_id, plugin)
        for name in sorted({e["plugin"] for e in events}):
            with self._lock:
                slot = self._slots.get(name)
            perms = slot.source.manifest.permissions if slot and slot.source else None
            targets = ([None] if perms is None or perms.local.buzzer else []) + \
                      ([n for n, g in perms.nodes.items() if g.buzzer] if perms else [])
            for node in targets:
                try:
                    self.services.silence(node)
                except Exception as exc:  # no buzzer there, or the node is down: say so, carry on
                    log.warning("acknowledging %s: cannot silence the buzzer on %s: %s: %s",
                                name, node or self.node, type(exc).__name__, exc)
        return events

    # -- health ------------------------------------------------------------------------------
    def status(self, name: str | None = None) -> dict[str, Any]:
        """Per-plugin health (one plugin, or all of them keyed by name)."""
        if name is not None:
            return self.get(name).status()
        with self._lock:
            slots = list(self._slots.values())
        return {s.name: s.status() for s in sorted(slots, key=lambda s: s.name)}

    def summary(self) -> list[dict[str, Any]]:
        """One line per plugin: name, version, state, backend, calls, errors."""
        return [{k: st[k] for k in ("name", "version", "state", "backend", "calls", "errors", "timeouts", "traps",
                                    "denied", "p50_ms", "p99_ms", "last_error", "reload_error")}
                for st in self.status().values()]

    def close(self) -> None:
        """Unload every plugin (alerts stay active in the book: the node is only stopping)."""
        with self._lock:
            slots = list(self._slots.values())
        for slot in slots:
            slot.close()

    # -- persistence of the enabled flags -------------------------------------------------------
