"""Typed readings: one table of quantities and units, validated on construction."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from hal.errors import ReadingError

NAME_RE = re.compile(r"^[a-z0-9_.-]{1,64}$")

# Quality flags: "ok" is a trustworthy value; "calibrating" is a value whose algorithm
# has not converged yet (IAQ burn-in) and must never fire an alert; "unavailable" has
# no value and says why in `reason`.
QUALITIES = ("ok", "calibrating", "unavailable")


@dataclass(frozen=True, slots=True)
class Quantity:
    """A measurable quantity: its unit and the range a plausible value lies in."""

    name: str
    unit: str
    low: float
    high: float
    description: str


QUANTITIES: dict[str, Quantity] = {
    q.name: q
    for q in (
        Quantity("temperature", "°C", -40.0, 85.0, "air temperature"),
        Quantity("humidity", "%", 0.0, 100.0, "relative humidity"),
        Quantity("pressure", "hPa", 300.0, 1100.0, "barometric pressure"),
        Quantity("gas_resistance", "Ω", 0.0, 1.0e9, "MOX gas sensor resistance"),
        Quantity("iaq", "IAQ", 0.0, 500.0, "indoor air quality index, 0 best, 500 worst"),
        Quantity("cpu_temperature", "°C", -40.0, 150.0, "SoC temperature"),
        Quantity("cpu_load", "%", 0.0, 100.0, "CPU busy share since the previous read"),
        Quantity("memory_used", "MB", 0.0, 1.0e7, "memory in use (total minus available)"),
        Quantity("memory_total", "MB", 0.0, 1.0e7, "physical memory"),
        Quantity("memory_percent", "%", 0.0, 100.0, "memory in use as a share of total"),
        Quantity("uptime", "s", 0.0, 1.0e10, "seconds since boot"),
        Quantity("rtt", "ms", 0.0, 60_000.0, "round-trip time to a peer"),
        Quantity("packet_loss", "%", 0.0, 100.0, "share of probes that got no answer"),
    )
}


def unit_of(quantity: str) -> str:
    """Return the unit of a known quantity, or raise ReadingError."""
    try:
        return QUANTITIES[quantity].unit
    except KeyError:
        raise ReadingError(f"unknown quantity {quantity!r}; known: {', '.join(QUANTITIES)}") from None


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value of one quantity by one sensor on one node at one time (UTC epoch s)."""

    node: str
    sensor: str
    quantity: str
    value: float | None
    unit: str
    ts: float
    quality: str = "ok"
    reason: str | None = None

    def __post_init__(self) -> None:
        for field in ("node", "sensor"):
            v = getattr(self, field)
            if not isinstance(v, str) or not NAME_RE.match(v):
                raise ReadingError(f"{field} must match [a-z0-9_.-]{{1,64}}, got {v!r}")
        if not isinstance(self.quantity, str):
            raise ReadingError(f"quantity must be a string, got {type(self.quantity).__name__}")
        if not (self.reason is None or isinstance(self.reason, str)):
            raise ReadingError(f"reason must be a string or null, got {type(self.reason).__name__}")
        expected = unit_of(self.quantity)
        if self.unit != expected:
            raise ReadingError(f"{self.quantity} is measured in {expected!r}, not {self.unit!r}")
        if isinstance(self.ts, bool) or not isinstance(self.ts, (int, float)) or not math.isfinite(self.ts):
            raise ReadingError(f"ts must be a finite number of seconds, got {self.ts!r}")
        if self.quality not in QUALITIES:
            raise ReadingError(f"quality must be one of {QUALITIES}, got {self.quality!r}")
        if self.value is None:
            if self.quality != "unavailable" or not self.reason:
                raise ReadingError("a reading without a value must be 'unavailable' and give a reason")
            return
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
            raise ReadingError(f"value must be a number, got {type(self.value).__name__}")
        if not math.isfinite(self.value):
            raise ReadingError(f"value must be finite, got {self.value!r}")
        if self.quality == "unavailable":
            raise ReadingError("an 'unavailable' reading cannot carry a value")
        q = QUANTITIES[self.quantity]
        if not q.low <= self.value <= q.high:
            raise ReadingError(
                f"{self.quantity} {self.value} {self.unit} is outside the plausible range {q.low}..{q.high}"
            )

    @property
    def ok(self) -> bool:
        """True when the reading carries a trustworthy value."""
        return self.quality == "ok"

    @classmethod
    def measured(cls, node: str, sensor: str, quantity: str, value: float, ts: float,
                 quality: str = "ok") -> Reading:
        """Build a reading with a value, taking the unit from the quantity table."""
        return cls(node, sensor, quantity, float(value), unit_of(quantity), ts, quality)

    @classmethod
    def failed(cls, node: str, sensor: str, quantity: str, ts: float, reason: str) -> Reading:
        """Build an 'unavailable' reading that says why there is no value."""
        return cls(node, sensor, quantity, None, unit_of(quantity), ts, "unavailable", reason)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the wire (serpent/msgpack/JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reading:
        """Rebuild and validate a reading from a plain dict; unknown keys are an error."""
        if not isinstance(data, dict):
            raise ReadingError(f"a reading must be an object, got {type(data).__name__}")
        unknown = set(data) - set(cls.__slots__)  # type: ignore[attr-defined]
        if unknown:
            raise ReadingError(f"unknown reading field(s): {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ReadingError(f"bad reading: {exc}") from None
