"""PluginsActor: `harvester.<node>.plugins`, the node's plugin runner on the wire.

A thin wrapper over plugins.host.PluginHost (the domain object; on a node, plugins.lazy's
stand-in until the folder holds a plugin), plus `RemoteActuators`,
the route by which a hub plugin drives a spoke's LEDs and buzzer through that spoke's
actors.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actors.base import Actor, Bool, Int, ListOf, Record, Str, remote
from actors.errors import BadRequest
from hal.errors import ReadingError
from hal.names import object_name
from nameserver.pyro import CALL_TIMEOUT
from plugins.alerts import HISTORY
from plugins.errors import UnknownPlugin
from plugins.services import Actuators

if TYPE_CHECKING:
    from plugins.host import PluginHost
    from plugins.lazy import LazyPluginHost


class RemoteActuators:
    """Another node's LEDs and buzzer through its `leds` and `buzzer` actors (never retried)."""

    def __init__(self, node: str, ns_host: str, ns_port: int, timeout: float = CALL_TIMEOUT) -> None:
        # the interactive client's module: a node loads it only to drive another node's actuators
        from actors.client import ActorHandle

        self.node = node
        self._leds = ActorHandle(object_name(node, "leds"), ns_host, ns_port, timeout=timeout)
        self._buzzer = ActorHandle(object_name(node, "buzzer"), ns_host, ns_port, timeout=timeout)

    def set_pixel(self, index: int, r: int, g: int, b: int) -> Any:
        """Set one pixel on the remote strip."""
        return self._leds.call("set_pixel", index, r, g, b)

    def beep(self, count: int, duration_ms: int) -> Any:
        """Beep on the remote buzzer."""
        return self._buzzer.call("beep", count, duration_ms)

    def play(self, pattern: str) -> Any:
        """Play a pattern on the remote buzzer."""
        return self._buzzer.call("play", pattern)

    def silence(self) -> Any:
        """Silence the remote buzzer."""
        return self._buzzer.call("silence")


def remote_actuators(ns_host: str, ns_port: int, timeout: float = CALL_TIMEOUT) -> Callable[[str], Actuators]:
    """The `remote` function for plugins.services.NodeServices: one RemoteActuators per node."""
    cache: dict[str, RemoteActuators] = {}
    lock = threading.Lock()

    def route(node: str) -> Actuators:
        with lock:
            if node not in cache:
                cache[node] = RemoteActuators(node, ns_host, ns_port, timeout)
            return cache[node]

    return route


# Plugin names are [a-z][a-z0-9_]{0,47} (plugins.manifest); unknown ones get BadRequest by name.
PLUGIN = Str(48)
# An on-demand evaluation gets one node's batch: a few quantities per sensor, never thousands.
MAX_READINGS = 1000


class PluginsActor(Actor):
    """`harvester.<node>.plugins`: list, status, reload, enable/disable, evaluate, alerts."""

    kind = "plugins"

    def __init__(self, node: str, host: PluginHost | LazyPluginHost, role: str = "spoke") -> None:
        super().__init__(node, "plugins", role, tags={f"profile:{host.profile}"})
        self.host = host

    def _known(self, name: str | None) -> None:
        if name is not None and name not in self.host.names():
            raise BadRequest(f"no plugin {name!r} on {self.node}; known: {', '.join(self.host.names()) or 'none'}")

    @remote
    def list(self) -> list[dict[str, Any]]:
        """One line per plugin: name, version, state (ok/quarantined/error/disabled), calls, errors, p50/p99 ms."""
        return self.host.summary()

    @remote(name=Str(48, optional=True))
    def status(self, name: str | None = None) -> dict[str, Any]:
        """Full health of one plugin, or of all: state, last error, counters, call times, manifest."""
        self._known(name)
        return self.host.status(name)

    @remote(name=Str(48, optional=True))
    def reload(self, name: str | None = None) -> dict[str, Any]:
        """Re-read plugin files now (one by name, or scan all); a broken edit keeps the old version."""
        self._known(name)
        return self.host.reload(name)

    @remote(name=PLUGIN)
    def enable(self, name: str) -> dict[str, Any]:
        """Run a disabled plugin again."""
        self._known(name)
        return self.host.set_enabled(name, True)

    @remote(name=PLUGIN)
    def disable(self, name: str) -> dict[str, Any]:
        """Stop running a plugin (its active alerts are cleared); remembered across restarts."""
        self._known(name)
        return self.host.set_enabled(name, False)

    @remote(readings=ListOf(Record(), MAX_READINGS, optional=True), name=Str(48, optional=True), apply=Bool())
    def evaluate(self, readings: list[dict[str, Any]] | None = None, name: str | None = None,
                 apply: bool = False) -> list[dict[str, Any]]:
        """Evaluate now: on the given reading dicts, or on the latest batch of each sensor.

        By default a dry run (nothing reaches LEDs, buzzer, state or alerts); apply=True
        acts like a scheduled evaluation."""
        self._known(name)
        try:
            if readings is None:
                return self.host.evaluate_latest(dry_run=not apply, only=name)
            return self.host.evaluate(readings, dry_run=not apply, only=name)
        except (ReadingError, UnknownPlugin) as exc:
            raise BadRequest(str(exc)) from None

    @remote(name=PLUGIN)
    def poll(self, name: str) -> dict[str, Any]:
        """Measure a plugin-implemented sensor now; returns the outcome and its readings."""
        self._known(name)
        return self.host.poll(name)

    @remote(limit=Int(1, HISTORY))
    def alerts(self, limit: int = 100) -> dict[str, Any]:
        """Active alerts of this node's plugins and the latest raise/clear/acknowledge events."""
        return {"active": self.host.alerts.active(), "history": self.host.alerts.history(limit)}

    @remote(alert_id=Str(optional=True), plugin=Str(48, optional=True))
    def acknowledge(self, alert_id: str | None = None, plugin: str | None = None) -> list[dict[str, Any]]:
        """Acknowledge active alerts (by id and/or plugin; none given: all) and silence the buzzer."""
        return self.host.acknowledge(alert_id, plugin)
