"""The hub: its store and in-memory view, the aggregator spokes push to, the name server, the
spoke prober, hub plugins over the spokes' readings, and the housekeeping jobs."""

from __future__ import annotations

import gc
import logging
import threading
import time
from datetime import datetime
from typing import Any

from apscheduler.schedulers.base import BaseScheduler

from actors.base import Actor
from actors.errors import StoreFull, cannot_listen
from actors.hub.aggregator import AggregatorActor
from actors.hub.prober import PROBE_INTERVAL, SpokeProber
from actors.hub.state import Hub
from actors.hub.store import Row, Store
from actors.hub.tokens import Tokens
from actors.node.config import NodeConfig
from actors.node.jobspec import JobSpec
from actors.node.role import Evaluate, NodeRole
from hal.readings import Reading
from nameserver.registry import home_tag

log = logging.getLogger(__name__)
PUSHED_QUEUE = 1000  # batches waiting for hub plugins; beyond it they are counted, not evaluated


class PushedQueue:
    """Spokes' readings for hub plugins that watch other nodes, evaluated off the push path."""

    def __init__(self, evaluate: Evaluate, limit: int = PUSHED_QUEUE) -> None:
        self._evaluate = evaluate
        self._limit = limit
        self._lock = threading.Lock()
        self._pending: list[tuple[str, list[Row]]] = []
        self.dropped = 0

    def put(self, node: str, rows: list[Row]) -> None:
        """Queue one stored batch (called under the hub's lock: must be cheap)."""
        with self._lock:
            if len(self._pending) < self._limit:
                self._pending.append((node, rows))
            else:
                self.dropped += 1

    def evaluate(self) -> None:
        """Run the hub's plugins on every queued batch."""
        with self._lock:
            pending, self._pending = self._pending, []
        for node, rows in pending:
            self._evaluate([Reading.trusted(node, *r) for r in rows])  # the push checked them


# A hub with a thousand spokes holds a large, steady heap (each node's latest rows and cached
# views) and allocates constantly. With CPython's default thresholds a full collection ran every
# two seconds and stopped every thread for 50-80 ms each time: that was the tail of every push
# and page. The objects that exist once the hub is up (modules, the store, the actors) are moved
# out of the collector's sight, and young objects are collected less often, so that the
# full collections that remain are rarer and shorter.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Freeze what exists now and raise the collection thresholds (once the hub is built)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class HubRole(NodeRole):
    """What only the hub node runs."""

    hub: Hub
    tokens: Tokens

    def __init__(self, config: NodeConfig, evaluate: Evaluate) -> None:
        super().__init__(config)
        self.pushed = PushedQueue(evaluate)
        self.nameserver: Any = None
        self.prober: SpokeProber | None = None
        self.group: Any = None  # actors.hub.group.HubGroup with several hubs
        self.exporters: list[Any] = []  # actors.hub.export.Exporter, one per [[export]] target
        self.notifier: Any = None  # actors.hub.notify.Notifier with [[notify]] channels
        self._store_full = False

    def build(self) -> list[Actor]:
        """Open the store and the token file; the hub introduces itself to its own view."""
        cfg = self.config
        self.hub = Hub(Store(cfg.state_dir / "hub.sqlite3", cfg.store.max_mb, keep_batches=cfg.is_cluster))
        tokens_file = (cfg.web.tokens_file if cfg.web else None) or cfg.state_dir / "tokens.json"
        self.tokens = Tokens(tokens_file)
        self.hub.hello(self.hello_info(), time.time())
        self.hub.on_batch = self.pushed.put
        self.prober = SpokeProber(self.hub, cfg.hub_host, cfg.nameserver_port)
        actors: list[Actor] = [AggregatorActor(cfg.name, self.hub, {home_tag(cfg.hub_host, cfg.nameserver_port)})]
        if cfg.is_cluster:  # pysyncobj is imported by these hubs only
            from actors.hub.group import HubGroup

            self.group = HubGroup(cfg, self.hub)
            actors.extend(self.group.actors())
        if cfg.exports:
            from actors.hub.export import Exporter

            self.exporters = [Exporter(t, self.hub.store.path, self.hub.store, ledger=self.group) for t in cfg.exports]
            self.hub.exporters = self.exporters
        if cfg.notify:
            from actors.hub.notify import Notifier, NotifyActor

            self.notifier = self.hub.notifier = Notifier(cfg.notify, self.hub.store, cfg.name, ledger=self.group)
            actors.append(NotifyActor(cfg.name, self.notifier))
        return actors

    def start(self) -> None:
        """The embedded name server, before any daemon registers with it."""
        cfg = self.config
        if cfg.embedded_nameserver:
            from nameserver.server import EmbeddedNameServer

            try:
                self.nameserver = EmbeddedNameServer(cfg.hub_host, cfg.nameserver_port,
                                                     allow_insecure=cfg.allow_insecure_lan).start()
            except OSError as exc:
                raise cannot_listen("hub.nameserver_port", cfg.hub_host, cfg.nameserver_port, exc) from exc
        if self.group is not None:
            self.group.start()
        for exporter in self.exporters:
            exporter.start()
        if self.notifier is not None:
            self.notifier.start()

    def install(self, scheduler: BaseScheduler, first_run: datetime) -> None:
        """Probe the spokes; evaluate hub plugins on what they pushed."""
        assert self.prober is not None
        scheduler.add_job(self.prober.run, "interval", seconds=PROBE_INTERVAL, id="probe")
        scheduler.add_job(self.pushed.evaluate, "interval", seconds=1.0, id="plugins:pushed")
        if self.group is not None:
            self.group.install(scheduler)
        tune_gc()

    def store(self, readings: list[Reading]) -> None:
        """The hub's own readings, straight into its store."""
        try:
            self.hub.ingest_local(self.config.name, readings)
        except StoreFull as exc:  # the hub's own readings are lost while its disk is full; say so once
            if not self._store_full:
                log.error("%s; the hub's own readings are dropped until space returns", exc)
            self._store_full = True
            return
        if self._store_full:
            log.info("hub store accepts writes again")
        self._store_full = False

    def alert(self, event: dict[str, Any]) -> None:
        """Alert events raised on the hub are stored at once."""
        self.hub.record_alerts(self.config.name, [event])

    def job_specs(self, configured: list[JobSpec]) -> list[JobSpec]:
        """Rollups, retention and the daily summary, unless the config names its own."""
        cfg = self.config
        kinds = {s.kind for s in configured}
        names = {s.name for s in configured}
        keep = {"raw_days": cfg.store.raw_days, "rollup_days": cfg.store.rollup_days}
        defaults = [JobSpec("rollup", "rollup", interval=60.0),
                    JobSpec("retention", "retention", cron="30 3 * * *", kwargs=keep),
                    JobSpec("daily-summary", "daily_summary", cron="5 0 * * *")]
        return [*configured, *(d for d in defaults if d.kind not in kinds and d.name not in names)]

    def health(self) -> dict[str, Any]:
        """Each export target's and notification channel's state, backlog and last error."""
        out: dict[str, Any] = {}
        if self.exporters:
            out["exports"] = [e.status() for e in self.exporters]
        if self.notifier is not None:
            out["notify"] = self.notifier.status()
        return out

    def problems(self) -> list[str]:
        """An export target the engine refused for good."""
        return [f"export {e.name} stopped: {e.stopped}" for e in self.exporters if e.stopped]

    def notes(self) -> list[str]:
        """One line per export target and notification channel (how far behind, since when, the last error)."""
        from actors.hub.export import describe

        lines = [describe(e.status()) for e in self.exporters]
        if self.notifier is not None:
            from actors.hub import notify

            lines += [notify.describe(s) for s in self.notifier.status()]
        return lines

    def liveness_interval(self) -> float:
        """The hub never pushes: its liveness comes from its own polls."""
        cfg = self.config
        return max([cfg.push_interval, *(s.interval for s in cfg.sensors)])

    def stop(self) -> None:
        """Stop probing and exporting, close the name server and the store."""
        if self.prober is not None:
            self.prober.close()
        for exporter in self.exporters:
            exporter.stop()
        if self.notifier is not None:
            self.notifier.stop()
        if self.group is not None:
            self.group.close()
        if self.nameserver is not None:
            self.nameserver.stop()
        if hasattr(self, "hub"):
            self.hub.store.close()
