"""Typed readings: one table of quantities and units, validated on construction."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from hal.errors import ReadingError
from hal.names import NODE_NAME_RULE, is_node_name

# Sensor names may carry a dot or a longer label (`network-<target>`); node names follow hal.names.
NAME_RE = re.compile(r"^[a-z0-9_.-]{1,64}\Z")

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
        # DS18B20 and SHT4x probes read -55..125 °C (water, soil, ovens); air sensors less
        Quantity("temperature", "°C", -55.0, 125.0, "temperature (air, or a probe's)"),
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
        Quantity("co2", "ppm", 0.0, 40_000.0, "carbon dioxide concentration"),
        Quantity("illuminance", "lx", 0.0, 120_000.0, "illuminance (visible light)"),
        Quantity("soil_moisture", "%", 0.0, 100.0, "volumetric soil moisture, 0 dry to 100 wet as calibrated"),
    )
}


def unit_of(quantity: str) -> str:
    """Return the unit of a known quantity, or raise ReadingError."""
    try:
        return QUANTITIES[quantity].unit
    except KeyError:
        raise ReadingError(f"unknown quantity {quantity!r}; known: {', '.join(QUANTITIES)}") from None


_UNITS = {q.name: q.unit for q in QUANTITIES.values()}
_RANGES = {q.name: (q.low, q.high) for q in QUANTITIES.values()}
_QUALITIES = frozenset(QUALITIES)
_GOOD_NAMES: set[str] = set()  # names already matched; the hub checks thousands per second
_GOOD_NODES: set[str] = set()


def _check_node(v: Any) -> None:
    if type(v) is str and v in _GOOD_NODES:
        return
    if not is_node_name(v):
        raise ReadingError(f"node must match {NODE_NAME_RULE}, got {v!r}")
    if len(_GOOD_NODES) < 10_000:
        _GOOD_NODES.add(v)


def _check_name(field: str, v: Any) -> None:
    if type(v) is str and v in _GOOD_NAMES:
        return
    if not isinstance(v, str) or not NAME_RE.match(v):
        raise ReadingError(f"{field} must match [a-z0-9_.-]{{1,64}}, got {v!r}")
    if len(_GOOD_NAMES) < 100_000:
        _GOOD_NAMES.add(v)


def _is_number(v: Any) -> bool:
    t = type(v)
    return t is float or t is int or (t is not bool and isinstance(v, (int, float)))


def check_fields(node: Any, sensor: Any, quantity: Any, value: Any, unit: Any, ts: Any, quality: Any,
                 reason: Any) -> None:
    """Validate the fields of one reading against the quantity table; raise ReadingError.

    The one rule set for a Reading, also called directly by the hub's ingest fast path."""
    _check_node(node)
    _check_name("sensor", sensor)
    if type(quantity) is not str:
        raise ReadingError(f"quantity must be a string, got {type(quantity).__name__}")
    expected = _UNITS.get(quantity)
    if expected is None:
        raise ReadingError(f"unknown quantity {quantity!r}; known: {', '.join(QUANTITIES)}")
    if unit != expected:
        raise ReadingError(f"{quantity} is measured in {expected!r}, not {unit!r}")
    if not _is_number(ts) or not math.isfinite(ts):
        raise ReadingError(f"ts must be a finite number of seconds, got {ts!r}")
    if type(quality) is not str or quality not in _QUALITIES:
        raise ReadingError(f"quality must be one of {QUALITIES}, got {quality!r}")
    if not (reason is None or isinstance(reason, str)):
        raise ReadingError(f"reason must be a string or null, got {type(reason).__name__}")
    if value is None:
        if quality != "unavailable" or not reason:
            raise ReadingError("a reading without a value must be 'unavailable' and give a reason")
        return
    if not _is_number(value):
        raise ReadingError(f"value must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ReadingError(f"value must be finite, got {value!r}")
    if quality == "unavailable":
        raise ReadingError("an 'unavailable' reading cannot carry a value")
    low, high = _RANGES[quantity]
    if not low <= value <= high:
        raise ReadingError(f"{quantity} {value} {unit} is outside the plausible range {low}..{high}")


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
        check_fields(self.node, self.sensor, self.quantity, self.value, self.unit, self.ts, self.quality,
                     self.reason)

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
