"""A spoke: readings go to a durable outbox, a push job drains it to the hub."""

from __future__ import annotations

import contextlib
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from actors.base import Actor
from actors.node.config import NodeConfig
from actors.node.role import NodeRole
from actors.spoke.outbox import Outbox
from actors.spoke.pusher import Pusher
from hal.readings import Reading
from hal.timesync import ClockMark, clock_mark

if TYPE_CHECKING:
    from actors.node.scheduler import NodeScheduler

# The boot in which this node last saw its clock synchronised, kept across agent restarts
CLOCK_SET_FILE = "clock-set-boot"


class SpokeRole(NodeRole):
    """Outbox, pusher, and the alert events waiting to ride with the next batch."""

    outbox: Outbox
    pusher: Pusher

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self._alerts_lock = threading.Lock()
        self._pending_alerts: list[dict[str, Any]] = []
        self._scheduler: NodeScheduler | None = None
        self._push_jobs: list[str] = []
        self._told_synced: bool | None = None  # the clock state the last release_held() saw
        self._set_boot: str | None = None  # the boot in which the clock was seen synchronised

    def build(self) -> list[Actor]:
        """Open the outbox (a spoke serves no actor of its role)."""
        cfg = self.config
        self.outbox = Outbox(cfg.state_dir / "outbox.sqlite3", cfg.name)
        try:
            self._set_boot = (cfg.state_dir / CLOCK_SET_FILE).read_text(encoding="utf-8").strip() or None
        except OSError:
            self._set_boot = None
        self.pusher = Pusher(cfg.name, self.outbox, cfg.hub_hosts, cfg.hub_name, cfg.push_batch_limit,
                             self.hello_info)
        return []

    def install(self, scheduler: NodeScheduler, first_run: datetime) -> None:
        """Push every push interval, and at once when a batch carries alert events (raised between
        polls, they reach the outbox within a second)."""
        self._scheduler = scheduler
        for i, link in enumerate(self.pusher.links):  # one job per hub: a frozen hub stalls only its own
            job_id = "push" if i == 0 else f"push:{link.address}"
            scheduler.add_job(self.push_to, "interval", args=[i], seconds=self.config.push_interval,
                              id=job_id, next_run_time=first_run)
            self._push_jobs.append(job_id)
        scheduler.add_job(self._flush_alerts, "interval", seconds=1.0, id="alerts:flush")

    def store(self, readings: list[Reading]) -> None:
        """Commit a batch (with the alert events raised since the last one) to the outbox."""
        alerts = self._take_alerts()
        self.outbox.append(readings, alerts, self._unsynced())
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
            self.outbox.append([], events, self._unsynced())
            self._push_now()

    def _clock_set(self) -> tuple[bool | None, bool]:
        """The kernel's synced flag, and whether the clock has been set in this boot: synchronised
        now, or seen synchronised earlier in this boot (it then lost its time server, and drifts
        by parts per million rather than being wrong by years). Unknown (None) counts as set."""
        status = self.clock_status()
        if status.synced and status.boot and status.boot != self._set_boot:
            self._set_boot = status.boot
            with contextlib.suppress(OSError):  # a full disk: this process still knows
                (self.config.state_dir / CLOCK_SET_FILE).write_text(status.boot, encoding="utf-8")
        return status.synced, status.synced is not False or (bool(status.boot) and status.boot == self._set_boot)

    def _unsynced(self) -> ClockMark | None:
        """The clock's mark when it has not been set in this boot (what was stamped now is held), else None."""
        if self.config.push_hold_unsynced and not self._clock_set()[1]:
            return clock_mark()
        return None

    def release_held(self) -> None:
        """Once the clock is set, let go of what was stamped before (stamps corrected); when the
        kernel's synced flag changed, say so in a hello at the next push (it goes only when due otherwise)."""
        synced, is_set = self._clock_set()
        if synced != self._told_synced:
            for link in self.pusher.links:
                link.hello_done = False
            self._told_synced = synced
        if is_set and self.outbox.held():
            self.outbox.release(clock_mark())

    def push_to(self, index: int) -> int:
        """One push run to one hub, after releasing what the synchronised clock lets go."""
        self.release_held()
        return self.pusher.push_to(index)

    def push_once(self) -> int:
        """Drain the outbox now; returns the batches the hub acknowledged."""
        self.release_held()
        return self.pusher.push_once()

    def hello_info(self) -> dict[str, Any]:
        """The node's hello, with whether its clock is synchronised (the hub flags it when not)."""
        info = super().hello_info()
        info["clock_synced"] = self.clock_status().synced
        return info

    def health(self) -> dict[str, Any]:
        """The outbox's pending and dropped counts; with several hubs, how each hub link fares."""
        if len(self.pusher.links) > 1:
            return {"outbox": self.outbox.stats(), "hub_links": self.pusher.links_state()}
        return {"outbox": self.outbox.stats()}

    def notes(self) -> list[str]:
        """Batches held for an unsynchronised clock, and batches set aside (refused by the hub)."""
        stats = self.outbox.stats() if hasattr(self, "outbox") else {}
        out = []
        synced, is_set = self._clock_set()
        if synced is False and is_set:
            out.append("the clock was synchronised earlier in this boot: readings go out as stamped "
                       "(it drifts without its time server, it does not jump)")
        if stats.get("held_unsynced"):
            out.append(f"{stats['held_unsynced']} batches stamped while the clock was not synchronised are held "
                       "in the outbox until it syncs")
        if stats.get("rejected_batches"):
            out.append(f"{stats['rejected_batches']} batches the hub refused are kept in the outbox's "
                       "rejected table")
        return out

    def problems(self) -> list[str]:
        """The outbox's disk refusing writes (readings are then held in memory, or dropped)."""
        stats = self.outbox.stats() if hasattr(self, "outbox") else {}
        if not stats.get("disk_full"):
            return []
        return [f"outbox {stats['disk_error']}; {stats['held_in_memory']} batches held in memory, "
                f"{stats['dropped_batches']} dropped"]

    def stop(self) -> None:
        """Close the hub connections and the outbox."""
        if hasattr(self, "pusher"):
            self.pusher.close()
        if hasattr(self, "outbox"):
            self.outbox.close()
