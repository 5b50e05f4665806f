"""A node's plugins before it has any: no PluginHost, and none of its modules, until a plugin appears.

The plugin host with its backends, manifests, sandbox API and SDK costs a Pi Zero node about
1 MB of RSS. A node whose plugin folder holds no plugin file (and that has no alerts kept from
earlier plugins) answers as an empty host would: no plugins, no alerts, nothing to poll. It
keeps the latest batch of each sensor all the same, so the first plugin that appears is
checked on those batches before it runs, as it would be on a host that had been running.
`scan()` (every few seconds) creates the host the moment the folder holds a plugin file;
from then on every call goes to it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugins.errors import UnknownPlugin
from plugins.folder import has_plugins
from plugins.samples import Samples

if TYPE_CHECKING:
    from hal.readings import Quantity, Reading
    from plugins.host import PluginHost


class _NoAlerts:
    """The alert book of a node without plugins: nothing active, nothing happened."""

    def active(self, plugin: str | None = None) -> list[dict[str, Any]]:
        return []

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        return []


class LazyPluginHost:
    """PluginHost's interface; `create(samples)` builds the real host when the first plugin appears.

    Until then each call answers what an empty host answers, with the same errors."""

    def __init__(self, node: str, plugin_dir: Path, profile: str, create: Callable[[Samples], PluginHost],
                 state_dir: Path | None = None) -> None:
        self.node = node
        self.plugin_dir = plugin_dir
        self.profile = profile
        self._create = create
        self._samples = Samples()
        self._host: PluginHost | None = None
        self._lock = threading.Lock()
        kept_alerts = state_dir is not None and (state_dir / "alerts.json").exists()
        if kept_alerts or has_plugins(plugin_dir):
            self._get_host()  # plugins to load, or alerts of earlier ones to show

    @property
    def loaded(self) -> bool:
        """True once the real host exists."""
        return self._host is not None

    @property
    def host(self) -> PluginHost:
        """The real host, created now if need be (with the batches kept so far)."""
        return self._get_host()

    def _get_host(self) -> PluginHost:
        with self._lock:
            if self._host is None:
                self._host = self._create(self._samples)
            return self._host

    def _unknown(self, name: str) -> UnknownPlugin:
        return UnknownPlugin(f"no plugin {name!r} on {self.node}; known: none")

    # -- what the agent calls all the time ------------------------------------------------------
    def scan(self) -> dict[str, Any]:
        """The host's scan(), once the folder holds a plugin file; until then an empty report."""
        if self._host is None and not has_plugins(self.plugin_dir):
            return {"loaded": [], "reloaded": [], "removed": [], "failed": {}}
        return self.host.scan()

    def evaluate(self, readings: Iterable[Reading | dict[str, Any]], dry_run: bool = False,
                 only: str | None = None) -> list[dict[str, Any]]:
        """No plugin, no outcome; the batch is checked and kept as the host does."""
        if self._host is not None:
            return self._host.evaluate(readings, dry_run, only)
        kept = self._samples.batch(readings, keep=False) is not None if dry_run else self._samples.keep(readings)
        if kept and only is not None:
            raise UnknownPlugin(f"no plugin {only!r} on {self.node}")
        return []

    def evaluate_latest(self, dry_run: bool = True, only: str | None = None) -> list[dict[str, Any]]:
        """Evaluate on the latest batch of every sensor; without a plugin there is nothing to run."""
        if self._host is not None:
            return self._host.evaluate_latest(dry_run, only)
        if only is not None and self._samples.list():
            raise UnknownPlugin(f"no plugin {only!r} on {self.node}")
        return []

    def poll_due(self) -> list[Reading]:
        """Readings of the plugin sensors that are due."""
        return [] if self._host is None else self._host.poll_due()

    def declared(self) -> list[Quantity]:
        """The quantities the loaded plugins declare."""
        return [] if self._host is None else self._host.declared()

    def close(self) -> None:
        """Unload every plugin."""
        if self._host is not None:
            self._host.close()

    # -- what PluginsActor calls ------------------------------------------------------------------
    @property
    def alerts(self) -> Any:
        """The host's alert book (an empty one before the first plugin)."""
        return _NoAlerts() if self._host is None else self._host.alerts

    def names(self) -> list[str]:
        """Known plugin names, sorted."""
        return [] if self._host is None else self._host.names()

    def get(self, name: str) -> Any:
        """The slot of a known plugin, or UnknownPlugin."""
        if self._host is None:
            raise self._unknown(name)
        return self._host.get(name)

    def summary(self) -> list[dict[str, Any]]:
        """One line per plugin."""
        return [] if self._host is None else self._host.summary()

    def status(self, name: str | None = None) -> dict[str, Any]:
        """Health of every plugin, or of one."""
        if self._host is None:
            if name is not None:
                raise self._unknown(name)
            return {}
        return self._host.status(name)

    def reload(self, name: str | None = None) -> dict[str, Any]:
        """Re-read one plugin, or scan the folder."""
        if self._host is None:
            if name is not None:
                raise self._unknown(name)
            return self.scan()
        return self._host.reload(name)

    def set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        """Enable or disable a plugin."""
        if self._host is None:
            raise self._unknown(name)
        return self._host.set_enabled(name, enabled)

    def poll(self, name: str) -> dict[str, Any]:
        """Poll one plugin's sensor now."""
        if self._host is None:
            raise self._unknown(name)
        return self._host.poll(name)

    def acknowledge(self, alert_id: str | None = None, plugin: str | None = None) -> list[dict[str, Any]]:
        """Acknowledge active alerts; there are none before the first plugin."""
        return [] if self._host is None else self._host.acknowledge(alert_id, plugin)

    def __getattr__(self, name: str) -> Any:
        """Anything else (backend, unload, clock, ...) is the real host's, created for it."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._get_host(), name)
