"""One plugin on one node: its running version, hot reload beside it, traps and quarantine, health."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from plugins.backends.base import Backend, PluginInstance, PluginSource
from plugins.errors import PluginError, PluginTrap, error_kind
from plugins.hostapi import MAX_MESSAGE_CHARS, CallContext, HostApi, PluginEnv, clip
from plugins.results import CallTimes, parse_polled, parse_result

log = logging.getLogger(__name__)

TRAPS_TO_QUARANTINE = 3
TRAP_WINDOW_S = 60.0
QUARANTINE_ALERT = "plugin.quarantined"


def evaluate_request(readings_json: str, dry_run: bool) -> str:
    """The evaluate argument: {"readings": <JSON array>, "dry_run": bool}, without re-encoding the array."""
    return f'{{"readings":{readings_json},"dry_run":{"true" if dry_run else "false"}}}'


class PluginSlot:
    """Holds one plugin's current version; calls into it are serialized by `lock`."""

    def __init__(self, name: str, env: PluginEnv, backend: Backend) -> None:
        self.name = name
        self.env = env
        self.backend = backend
        self.lock = threading.RLock()
        self.current: PluginInstance | None = None
        self.source: PluginSource | None = None
        self.api: HostApi | None = None
        self.enabled = True
        self.quarantined = False
        self.tried: str | None = None  # fingerprint of the last version we tried to install
        self.load_error: str | None = None  # why no version runs
        self.reload_error: str | None = None  # why the newest edit was refused (the old one runs)
        self.last_error: str | None = None
        self.last_error_kind: str | None = None
        self.last_error_ts: float | None = None
        self.last_ok = True
        self.loaded_at: float | None = None
        self.last_poll: float | None = None
        self.counts = {"calls": 0, "ok": 0, "errors": 0, "timeouts": 0, "traps": 0, "reloads": 0,
                       "reload_failures": 0, "restarts": 0}
        self.times = CallTimes()
        self._traps: deque[float] = deque()

    # -- versions ----------------------------------------------------------------------------
    def install(self, source: PluginSource, samples: list[tuple[str, set[str], str]]) -> None:
        """Load `source` beside the running version, run it on samples (dry), then swap it in.

        On any failure the running version stays and the error is raised (PluginError).
        """
        self.tried = source.fingerprint
        api = HostApi(self.env, source.manifest)
        instance = self.backend.load(source, api)
        try:
            for text, quantities, node in samples:
                if source.manifest.wants(quantities, node, self.env.services.node):
                    api.begin("validate", dry_run=True)
                    try:
                        parse_result(instance.call("evaluate", evaluate_request(text, True)))
                    finally:
                        api.end(commit=False)
        except PluginError:
            instance.close()
            raise
        with self.lock:
            old, replaced = self.current, self.source is not None
            self.current, self.source, self.api = instance, source, api
            was_quarantined, self.quarantined = self.quarantined, False
            self._traps.clear()
            self.load_error = self.reload_error = None
            self.last_ok = True
            self.loaded_at = self.env.clock()
            if replaced:
                self.counts["reloads"] += 1
        if old is not None:
            old.close()
        if was_quarantined:
            self.env.alerts.clear_alert(self.name, source.manifest.version, QUARANTINE_ALERT,
                                        "a new version loaded", None)
        log.info("plugin %s %s %s (%s)", self.name, source.manifest.version,
                 "reloaded" if replaced else "loaded", self.backend.name)

    def refused(self, fingerprint: str | None, exc: BaseException) -> str:
        """Record a version that could not be installed; returns the message for reports."""
        with self.lock:
            self.tried = fingerprint
            self.counts["reload_failures"] += 1
            if self.source is not None:
                message = f"kept version {self.source.manifest.version} running; the new file failed: {exc}"
                self.reload_error = message
            else:
                message = f"not loaded: {exc}"
                self.load_error = message
            self._note_error(exc)
        log.warning("plugin %s: %s", self.name, message)
        return message

    def close(self) -> None:
        """Unload the running version."""
        with self.lock:
            instance, self.current = self.current, None
            self.source = self.api = None
        if instance is not None:
            instance.close()

    # -- calls -------------------------------------------------------------------------------
    def _runnable(self) -> bool:
        """True if a version may be called now; a dead runtime is restarted first."""
        if not self.enabled or self.quarantined or self.current is None:
            return False
        if not self.current.alive:
            try:
                self.current.restart()
                self.counts["restarts"] += 1
            except PluginError as exc:
                self._note_error(exc)
                if isinstance(exc, PluginTrap):
                    self._trapped(exc)
                return False
        return True

    def evaluate(self, text: str, quantities: set[str], node: str, dry_run: bool = False) -> dict[str, Any] | None:
        """Run the plugin on one node's batch (a JSON array of readings); None when it does not run."""
        with self.lock:
            src = self.source
            if src is None or not src.manifest.wants(quantities, node, self.env.services.node) or not self._runnable():
                return None
            return self._run("evaluate", evaluate_request(text, dry_run), dry_run, parse_result)

    def poll(self) -> tuple[dict[str, Any], list[Any]]:
        """Measure the plugin's sensor; returns (outcome, readings)."""
        with self.lock:
            self.last_poll = self.env.clock()
            if self.source is None or self.source.manifest.sensor is None or not self._runnable():
                return {"plugin": self.name, "ok": False, "error": "not running", "kind": "unavailable"}, []
            sensor = self.source.manifest.sensor
            readings: list[Any] = []

            def parse(text: str) -> None:
                readings.extend(parse_polled(text, self.env.services.node, self.name, sensor.quantities))

            return self._run("poll", None, False, parse), readings

    def _run(self, method: str, arg: str | None, dry_run: bool, parse: Any) -> dict[str, Any]:
        assert self.current is not None and self.api is not None and self.source is not None
        api, version = self.api, self.source.manifest.version
        api.begin(method, dry_run)
        started = time.perf_counter()
        try:
            result = parse(self.current.call(method, arg))
        except PluginError as exc:
            ctx = api.end(commit=False)
            self._finish(started)
            self._failed(exc)
            return self._outcome(version, ctx, started, error=exc)
        ctx = api.end(commit=True)
        self._finish(started)
        self.counts["ok"] += 1
        self.last_ok = True
        return self._outcome(version, ctx, started, result=result)

    def _finish(self, started: float) -> None:
        self.counts["calls"] += 1
        self.times.add(time.perf_counter() - started)

    def _outcome(self, version: str, ctx: CallContext, started: float, result: Any = None,
                 error: BaseException | None = None) -> dict[str, Any]:
        return {"plugin": self.name, "version": version, "ok": error is None, "result": result,
                "error": None if error is None else str(error),
                "kind": None if error is None else error_kind(error),
                "actions": ctx.actions, "alerts": ctx.alerts, "denied": ctx.denied, "dry_run": ctx.dry_run,
                "ms": round(1000 * (time.perf_counter() - started), 3)}

    def _note_error(self, exc: BaseException) -> None:
        self.last_ok = False
        self.last_error = str(exc)
        self.last_error_kind = error_kind(exc)
        self.last_error_ts = self.env.clock()

    def _failed(self, exc: PluginError) -> None:
        self._note_error(exc)
        kind = error_kind(exc)
        self.counts["timeouts" if kind == "timeout" else "traps" if kind == "trap" else "errors"] += 1
        if isinstance(exc, PluginTrap):
            log.warning("plugin %s: %s", self.name, exc)
            self._trapped(exc)

    def _trapped(self, exc: PluginTrap) -> None:
        """Count a trap; the third within TRAP_WINDOW_S quarantines, otherwise rebuild now."""
        now = self.env.clock()
        self._traps.append(now)
        while self._traps and now - self._traps[0] > TRAP_WINDOW_S:
            self._traps.popleft()
        if len(self._traps) >= TRAPS_TO_QUARANTINE:
            self._quarantine(exc)
            return
        if self.current is not None and not self.current.alive:
            try:
                self.current.restart()
                self.counts["restarts"] += 1
            except PluginError as again:  # the next call tries again
                self._note_error(again)

    def _quarantine(self, exc: PluginTrap) -> None:
        self.quarantined = True
        version = self.source.manifest.version if self.source else "?"
        message = (f"plugin {self.name} {version} quarantined after {len(self._traps)} traps within "
                   f"{TRAP_WINDOW_S:g} s (last: {exc}); it runs again when its file changes")
        log.error("%s", message)
        if self.current is not None:
            self.current.close()
        self.env.alerts.raise_alert(self.name, version, {"id": QUARANTINE_ALERT, "severity": "warning",
                                                         "message": clip(message, MAX_MESSAGE_CHARS)})

    # -- health ------------------------------------------------------------------------------
    def state(self) -> str:
        """ok, error, quarantined or disabled."""
        if not self.enabled:
            return "disabled"
        if self.quarantined:
            return "quarantined"
        if self.current is None or not self.last_ok:
            return "error"
        return "ok"

    def status(self) -> dict[str, Any]:
        """Plain-types health of this plugin."""
        with self.lock:
            src, env = self.source, self.env
            with env.lock:
                counts = {**self.counts, **env.counts}
                last_denied, last_apply_error = env.last_denied, env.last_apply_error
            return {
                "name": self.name, "state": self.state(), "enabled": self.enabled,
                "version": src.manifest.version if src else None,
                "kind": src.kind if src else None, "backend": self.backend.name,
                "file": str(src.path) if src else None,
                "fingerprint": src.fingerprint[:12] if src else None,
                "loaded_at": self.loaded_at,
                "last_error": self.last_error, "last_error_kind": self.last_error_kind,
                "last_error_ts": self.last_error_ts, "load_error": self.load_error,
                "reload_error": self.reload_error, "last_denied": last_denied,
                "last_apply_error": last_apply_error,
                **counts, **self.times.percentiles(),
                "active_alerts": len(env.alerts.active(self.name)),
                "manifest": src.manifest.summary() if src else None,
            }
