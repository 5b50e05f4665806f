"""Typed readings: one table of quantities and units, validated on construction."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
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
    """A measurable quantity: its unit, the range a plausible value lies in, what it is, and
    Home Assistant's device class for it where there is one."""

    name: str
    unit: str
    low: float
    high: float
    description: str
    device_class: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """As a node declares it (config, manifest, hello)."""
        out = {"name": self.name, "unit": self.unit, "low": self.low, "high": self.high,
               "description": self.description}
        if self.device_class:
            out["device_class"] = self.device_class
        return out


# Home Assistant's sensor device classes that describe a measured value (SensorDeviceClass,
# without date, enum, timestamp and monetary).
DEVICE_CLASSES = frozenset((
    "apparent_power", "aqi", "area", "atmospheric_pressure", "battery", "blood_glucose_concentration",
    "carbon_dioxide", "carbon_monoxide", "conductivity", "current", "data_rate", "data_size", "distance",
    "duration", "energy", "energy_distance", "energy_storage", "frequency", "gas", "humidity", "illuminance",
    "irradiance", "moisture", "nitrogen_dioxide", "nitrogen_monoxide", "nitrous_oxide", "ozone", "ph", "pm1",
    "pm10", "pm25", "power", "power_factor", "precipitation", "precipitation_intensity", "pressure",
    "reactive_power", "signal_strength", "sound_pressure", "speed", "sulphur_dioxide", "temperature",
    "volatile_organic_compounds", "volatile_organic_compounds_parts", "voltage", "volume", "volume_flow_rate",
    "volume_storage", "water", "weight", "wind_direction", "wind_speed",
))

QUANTITIES: dict[str, Quantity] = {
    q.name: q
    for q in (
        # DS18B20 and SHT4x probes read -55..125 °C (water, soil, ovens); air sensors less
        Quantity("temperature", "°C", -55.0, 125.0, "temperature (air, or a probe's)", "temperature"),
        Quantity("humidity", "%", 0.0, 100.0, "relative humidity", "humidity"),
        Quantity("pressure", "hPa", 300.0, 1100.0, "barometric pressure", "atmospheric_pressure"),
        Quantity("gas_resistance", "Ω", 0.0, 1.0e9, "MOX gas sensor resistance"),
        Quantity("iaq", "IAQ", 0.0, 500.0, "indoor air quality index, 0 best, 500 worst"),
        Quantity("cpu_temperature", "°C", -40.0, 150.0, "SoC temperature", "temperature"),
        Quantity("cpu_load", "%", 0.0, 100.0, "CPU busy share since the previous read"),
        Quantity("memory_used", "MB", 0.0, 1.0e7, "memory in use (total minus available)"),
        Quantity("memory_total", "MB", 0.0, 1.0e7, "physical memory"),
        Quantity("memory_percent", "%", 0.0, 100.0, "memory in use as a share of total"),
        Quantity("uptime", "s", 0.0, 1.0e10, "seconds since boot", "duration"),
        Quantity("rtt", "ms", 0.0, 60_000.0, "round-trip time to a peer", "duration"),
        Quantity("packet_loss", "%", 0.0, 100.0, "share of probes that got no answer"),
        Quantity("co2", "ppm", 0.0, 40_000.0, "carbon dioxide concentration", "carbon_dioxide"),
        Quantity("illuminance", "lx", 0.0, 120_000.0, "illuminance (visible light)", "illuminance"),
        Quantity("soil_moisture", "%", 0.0, 100.0, "volumetric soil moisture, 0 dry to 100 wet as calibrated",
                 "moisture"),
    )
}

# A declared quantity's name is also a metric label value, an MQTT topic level and an
# InfluxDB tag: stricter than a sensor name.
DECLARED_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}\Z")
DECLARED_NAME_RULE = "[a-z][a-z0-9_]{0,39}"
MAX_DECLARED = 64  # quantities one node may declare


def parse_quantity(raw: Any, where: str = "quantity") -> Quantity:
    """A declared quantity from its table ({name, unit, low, high, description?, device_class?});
    ReadingError naming the key that is wrong."""
    if not isinstance(raw, dict):
        raise ReadingError(f"{where} must be a table, got {type(raw).__name__}")
    unknown = set(raw) - {"name", "unit", "low", "high", "description", "device_class"}
    if unknown:
        raise ReadingError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                           "(known: name, unit, low, high, description, device_class)")
    name, unit = raw.get("name"), raw.get("unit")
    if not isinstance(name, str) or not DECLARED_NAME.match(name):
        raise ReadingError(f"{where}.name must match {DECLARED_NAME_RULE}, got {name!r}")
    where = f"{where} {name}"
    if not isinstance(unit, str) or len(unit) > 16 or unit != unit.strip() or not unit.isprintable():
        raise ReadingError(f"{where}: unit must be text of at most 16 printable characters ('' for none), "
                           f"got {unit!r}")
    low, high = raw.get("low"), raw.get("high")
    for key, v in (("low", low), ("high", high)):
        if not _is_number(v) or not math.isfinite(v):
            raise ReadingError(f"{where}: {key} must be a finite number, got {v!r}")
    if not low < high:
        raise ReadingError(f"{where}: low ({low}) must be below high ({high})")
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > 200:
        raise ReadingError(f"{where}: description must be text of at most 200 characters")
    device_class = raw.get("device_class")
    if device_class is not None and device_class not in DEVICE_CLASSES:
        raise ReadingError(f"{where}: device_class {device_class!r} is not one of Home Assistant's sensor "
                           f"device classes ({', '.join(sorted(DEVICE_CLASSES))})")
    return Quantity(name, unit, float(low), float(high), description, device_class)


def conflict(q: Quantity, other: Quantity | None) -> str | None:
    """Why `q` cannot stand beside an existing declaration (or built-in) of its name; None if it can.

    One name means one unit and one device class across the fleet; ranges may differ per node."""
    builtin = QUANTITIES.get(q.name)
    if builtin is not None and q.unit != builtin.unit:
        return f"{q.name} is built in, measured in {builtin.unit!r}; it cannot be redefined in {q.unit!r}"
    if other is not None and (other.unit, other.device_class) != (q.unit, q.device_class):
        return (f"{q.name} in {q.unit!r} (device class {q.device_class}) differs from the declaration in "
                f"{other.unit!r} (device class {other.device_class})")
    return None


# What this process declared (its node config, its plugins' manifests): name -> (quantity, by whom).
_DECLARED: dict[str, tuple[Quantity, str]] = {}
_DECLARED_LIMITS: dict[str, tuple[str, float, float]] = {}


def declare(q: Quantity, by: str) -> None:
    """Make a declared quantity known to this process (Readings of it can then be built);
    ReadingError if it conflicts with a built-in or with another declaration. Declaring a
    built-in with its own unit changes nothing."""
    if q.name in QUANTITIES:
        if (problem := conflict(q, None)) is not None:
            raise ReadingError(f"{by}: {problem}")
        return
    held = _DECLARED.get(q.name)
    if held is not None and held[1] != by and (problem := conflict(q, held[0])):
        raise ReadingError(f"{by}: {problem} by {held[1]}")
    _DECLARED[q.name] = (q, by)
    _DECLARED_LIMITS[q.name] = (q.unit, q.low, q.high)


def forget(by: str) -> None:
    """Drop what `by` declared (a plugin unloaded)."""
    for name in [n for n, (_, who) in _DECLARED.items() if who == by]:
        del _DECLARED[name]
        del _DECLARED_LIMITS[name]


def declared() -> list[Quantity]:
    """This process's declared quantities (not the built-ins), sorted by name."""
    return [q for _, (q, _) in sorted(_DECLARED.items())]


def lookup(name: str) -> Quantity | None:
    """A built-in or declared quantity by name."""
    q = QUANTITIES.get(name)
    if q is None and name in _DECLARED:
        q = _DECLARED[name][0]
    return q


def unit_of(quantity: str) -> str:
    """Return the unit of a known (built-in or declared) quantity, or raise ReadingError."""
    q = lookup(quantity)
    if q is None:
        raise ReadingError(f"unknown quantity {quantity!r}; built in: {', '.join(QUANTITIES)}; others must be "
                           "declared ([[quantities]] in the node config or the plugin manifest)")
    return q.unit


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
                 reason: Any, declared: dict[str, tuple[str, float, float]] | None = None) -> None:
    """Validate the fields of one reading against the quantity table; raise ReadingError.

    The one rule set for a Reading, also called directly by the hub's ingest fast path, which
    gives `declared`: the sending node's own quantities as name -> (unit, low, high). Without
    it, this process's declarations count."""
    _check_node(node)
    _check_name("sensor", sensor)
    if type(quantity) is not str:
        raise ReadingError(f"quantity must be a string, got {type(quantity).__name__}")
    expected = _UNITS.get(quantity)
    if expected is None:
        table = _DECLARED_LIMITS if declared is None else declared
        limits = table.get(quantity)
        if limits is None:
            raise ReadingError(f"unknown quantity {quantity!r}: neither built in nor declared"
                               + (f" by {node}" if declared is not None else "")
                               + "; declare it ([[quantities]] in the node config or the plugin manifest)")
        expected, low, high = limits
    else:
        low, high = _RANGES[quantity]
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

    @classmethod
    def trusted(cls, node: str, sensor: str, quantity: str, value: float | None, unit: str, ts: float,
                quality: str = "ok", reason: str | None = None) -> Reading:
        """A reading from fields that passed check_fields' rules elsewhere, not checked again.

        For the hub's readings of what spokes pushed: its ingest checks each one, with the
        quantities its node declared, before storing it. Built again the checked way, a reading
        of a declared quantity fails (only the built-ins are known here), and at ten thousand
        readings a second the second check cost about 1.2 us each."""
        reading = object.__new__(cls)
        # the slots' own setters: a frozen dataclass refuses setattr, and object.__setattr__ in a
        # loop cost as much as the check it skips
        s_node, s_sensor, s_quantity, s_value, s_unit, s_ts, s_quality, s_reason = _SETTERS
        s_node(reading, node)
        s_sensor(reading, sensor)
        s_quantity(reading, quantity)
        s_value(reading, value)
        s_unit(reading, unit)
        s_ts(reading, ts)
        s_quality(reading, quality)
        s_reason(reading, reason)
        return reading

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


# each field's slot setter, in Reading(...)'s order, for Reading.trusted
_SETTERS = tuple(getattr(Reading, f.name).__set__ for f in fields(Reading))


def median(values: list[float]) -> float:
    """statistics.median, which drivers use alone: that module brings fractions with it."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
