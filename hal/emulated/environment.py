"""A simulated room: smooth, plausible, deterministic conditions as a function of time."""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RoomConditions:
    """What every emulated device in one room measures at one instant."""

    temperature: float  # °C
    humidity: float  # %RH
    pressure: float  # hPa
    gas_resistance: float  # Ω
    cpu_temperature: float  # °C, the board's SoC
    co2: float = 600.0  # ppm
    illuminance: float = 300.0  # lx
    soil_moisture: float = 45.0  # % between the calibrated dry and wet points


# What a room can be pinned to, in RoomConditions' order.
QUANTITY_NAMES: tuple[str, ...] = tuple(RoomConditions.__dataclass_fields__)


class RoomSimulator:
    """Conditions that drift slowly (minutes) plus a daily cycle; pin any value for tests.

    Two processes with the same seed see the same room at the same wall-clock time,
    which is what pi4 and pizero sharing one BME680 would see.
    """

    def __init__(self, seed: int = 1) -> None:
        rng = random.Random(seed)
        self._phases = [rng.uniform(0, 2 * math.pi) for _ in range(13)]
        self._lock = threading.Lock()
        self._pinned: dict[str, float] = {}

    def pin(self, **values: float | None) -> None:
        """Hold the named quantities at fixed values (None releases one); all or nothing:
        KeyError for an unknown name, and nothing changes."""
        unknown = [key for key in values if key not in QUANTITY_NAMES]
        if unknown:
            raise KeyError(f"unknown room quantity {unknown[0]!r}; known: {', '.join(QUANTITY_NAMES)}")
        held = {key: float(value) for key, value in values.items() if value is not None}
        with self._lock:
            for key, value in values.items():
                if value is None:
                    self._pinned.pop(key, None)
            self._pinned.update(held)

    def release(self, *names: str) -> list[str]:
        """Let the named quantities drift again (no names: all of them); returns those that were
        pinned. KeyError for an unknown name, and nothing changes."""
        unknown = [key for key in names if key not in QUANTITY_NAMES]
        if unknown:
            raise KeyError(f"unknown room quantity {unknown[0]!r}; known: {', '.join(QUANTITY_NAMES)}")
        with self._lock:
            released = [key for key in (names or tuple(self._pinned)) if key in self._pinned]
            for key in released:
                del self._pinned[key]
            return released

    def pinned(self) -> dict[str, float]:
        """What is held now: quantity -> value."""
        with self._lock:
            return dict(self._pinned)

    def at(self, t: float) -> RoomConditions:
        """The room at epoch time t."""
        p = self._phases
        day = 2 * math.pi * (t % 86400) / 86400

        def wave(i: int, period_s: float) -> float:
            return math.sin(2 * math.pi * t / period_s + p[i])

        temperature = 22.0 + 2.0 * math.sin(day + p[0]) + 0.6 * wave(1, 900) + 0.15 * wave(2, 97)
        humidity = 45.0 - 6.0 * math.sin(day + p[0]) + 3.0 * wave(3, 1300) + 0.4 * wave(4, 131)
        pressure = 1013.0 + 4.0 * wave(5, 7 * 3600) + 0.3 * wave(6, 600)
        # Gas resistance falls when VOCs rise; log-normal wander between ~40 kΩ and ~400 kΩ.
        gas = 150_000.0 * math.exp(0.8 * wave(7, 1800) + 0.2 * wave(8, 173))
        cpu = 48.0 + 6.0 * wave(9, 240) + 0.5 * (temperature - 22.0)
        # CO2 rises and falls with people in the room; light follows the day (night near 0 lx).
        co2 = 650.0 + 250.0 * wave(10, 2400) + 40.0 * wave(11, 211)
        daylight = max(0.0, math.sin(day + p[0] - math.pi / 2))
        illuminance = 5.0 + 700.0 * daylight * (1.0 + 0.1 * wave(12, 300))
        soil = 45.0 - 10.0 * wave(5, 5 * 3600)
        cond = RoomConditions(temperature, humidity, pressure, gas, cpu, co2, illuminance, soil)
        with self._lock:
            pinned = dict(self._pinned)
        return replace(cond, **pinned) if pinned else cond
