"""SensorActor: a hal sensor on the wire, with a cached latest value and rebuild-on-failure."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from actors.base import Actor, query, remote
from actors.devices.supervise import DeviceSlot
from actors.errors import ActorUnavailable
from hal.names import object_name
from hal.readings import Reading
from hal.sensor import Sensor

log = logging.getLogger(__name__)


class SensorActor(Actor):
    """One sensor: `read()` measures now, `latest()` returns the last poll's readings."""

    kind = "sensor"

    def __init__(self, node: str, name: str, build: Callable[[], Sensor], quantities: tuple[str, ...],
                 interval: float, stale_after: float, role: str = "spoke",
                 clock: Callable[[], float] = time.time, max_backoff: float = 300.0) -> None:
        super().__init__(node, name, role, tags={f"quantity:{q}" for q in quantities})
        self.slot: DeviceSlot[Sensor] = DeviceSlot(object_name(node, name), build, clock,
                                                   first_backoff=interval, max_backoff=max_backoff)
        self.quantities = quantities
        self.interval = interval
        self.stale_after = stale_after
        self._clock = clock
        self._device_lock = threading.Lock()
        self._latest: list[Reading] = []

    def poll(self) -> list[Reading]:
        """Measure once (scheduler path); failures become 'unavailable' readings."""
        with self._device_lock:
            ts = self._clock()
            sensor = self.slot.get()
            if sensor is None:
                reason = self.slot.last_error or "device not available"
                readings = [Reading.failed(self.node, self.name, q, ts, reason) for q in self.quantities]
            else:
                try:
                    readings = sensor.read()
                except Exception as exc:
                    # Sensor.read() must not raise; one that does is rebuilt after a backoff.
                    log.exception("%s: read() raised; rebuilding the device", self.object_name)
                    self.slot.failed(exc)
                    readings = [Reading.failed(self.node, self.name, q, ts, f"{type(exc).__name__}: {exc}")
                                for q in self.quantities]
            good = [r for r in readings if r.value is not None]
            self.note_error(None if good or not readings else readings[0].reason)
            self._latest = readings
            return readings

    def close(self) -> None:
        """Release the device."""
        with self._device_lock:
            self.slot.close()

    @remote
    def read(self) -> list[dict[str, Any]]:
        """Measure now and return one reading dict per quantity."""
        return [r.to_dict() for r in self.poll()]

    @remote
    def latest(self) -> list[dict[str, Any]]:
        """Readings of the last scheduled poll (no hardware access); 'stale' marks old ones."""
        now = self._clock()
        out = []
        for r in self._latest:
            d = r.to_dict()
            d["stale"] = now - r.ts > self.stale_after
            out.append(d)
        if not out:
            raise ActorUnavailable(f"{self.object_name} has not been polled yet")
        return out

    @query
    def info(self) -> dict[str, Any]:
        """Kind, quantities and poll interval of this sensor."""
        return {"name": self.object_name, "quantities": list(self.quantities),
                "interval_s": self.interval, "stale_after_s": self.stale_after, "state": self.availability}
