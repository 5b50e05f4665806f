"""A spoke: readings go to a durable outbox, a push job drains it to the hub."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from apscheduler.schedulers.base import BaseScheduler

from actors.base import Actor
from actors.node.config import NodeConfig
from actors.node.role import NodeRole
from actors.spoke.outbox import Outbox
from actors.spoke.pusher import Pusher
from hal.readings import Reading


class SpokeRole(NodeRole):
    """Outbox, pusher, and the alert events waiting to ride with the next batch."""

    outbox: Outbox
    pusher: Pusher

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self._alerts_lock = threading.Lock()
        self._pending_alerts: list[dict[str, Any]] = []
        self._scheduler: BaseScheduler | None = None
        self._push_jobs: list[str] = []

    def build(self) -> list[Actor]:
        """Open the outbox (a spoke serves no actor of its role)."""
        cfg = self.config
        self.outbox = Outbox(cfg.state_dir / "outbox.sqlite3", cfg.name)
        self.pusher = Pusher(cfg.name, self.outbox, cfg.hub_hosts, cfg.hub_name, cfg.push_batch_limit,
                             self.hello_info)
        return []

    def install(self, scheduler: BaseScheduler, first_run: datetime) -> None:
        """Push every push interval, and at once when a batch carries alert events (raised between
        polls, they reach the outbox within a second)."""
        self._scheduler = scheduler
        for i, link in enumerate(self.pusher.links):  # one job per hub: a frozen hub stalls only its own
            job_id = "push" if i == 0 else f"push:{link.address}"
            scheduler.add_job(self.pusher.push_to, "interval", args=[i], seconds=self.config.push_interval,
                              id=job_id, next_run_time=first_run)
            self._push_jobs.append(job_id)
        scheduler.add_job(self._flush_alerts, "interval", seconds=1.0, id="alerts:flush")

    def store(self, readings: list[Reading]) -> None:
        """Commit a batch (with the alert events raised since the last one) to the outbox."""
        alerts = self._take_alerts()
        self.outbox.append(readings, alerts)
        if alerts:
            self._push_now()

    def _push_now(self) -> None:
        """An alert is news for the hub (and whoever it notifies): push now, not at the next interval."""
        if self._scheduler is None:
            return
        now = datetime.now(self._scheduler.timezone)
        for job_id in self._push_jobs:
            try:
                self._scheduler.modify_job(job_id, next_run_time=now)
            except Exception:  # noqa: BLE001 (the scheduler shutting down: the regular push carries it)
                return

    def alert(self, event: dict[str, Any]) -> None:
        """Alert events ride with the next batch."""
        with self._alerts_lock:
            self._pending_alerts.append(event)

    def _take_alerts(self) -> list[dict[str, Any]]:
        with self._alerts_lock:
            events, self._pending_alerts = self._pending_alerts, []
        return events

    def _flush_alerts(self) -> None:
        """Alert events raised between polls (an acknowledge, a quarantine) travel in a batch of their own."""
        events = self._take_alerts()
        if events:
            self.outbox.append([], events)
            self._push_now()

    def push_once(self) -> int:
        """Drain the outbox now; returns the batches the hub acknowledged."""
        return self.pusher.push_once()

    def health(self) -> dict[str, Any]:
        """The outbox's pending and dropped counts; with several hubs, how each hub link fares."""
        if len(self.pusher.links) > 1:
            return {"outbox": self.outbox.stats(), "hub_links": self.pusher.links_state()}
        return {"outbox": self.outbox.stats()}

    def problems(self) -> list[str]:
        """The outbox's disk refusing writes (readings are then held in memory, or dropped)."""
        stats = self.outbox.stats() if hasattr(self, "outbox") else {}
        if not stats.get("disk_full"):
            return []
        return [f"outbox {stats['disk_error']}; {stats['held_in_memory']} batches held in memory, "
                f"{stats['dropped_batches']} dropped"]

    def stop(self) -> None:
        """Close the outbox."""
        if hasattr(self, "outbox"):
            self.outbox.close()
