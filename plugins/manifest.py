"""Plugin manifests: a TOML file beside each plugin naming its permissions, limits and config.

```toml
[plugin]
name = "room_temperature"          # the file stem: room_temperature.py / .wasm
version = "1.0.0"
description = "LED 1 red and the buzzer above 30 °C"
quantities = ["temperature"]       # only called for batches carrying these; [] = every batch
nodes = ["pi4"]                    # a hub plugin judging spokes' batches ("*" = all); default: own node

[permissions]
leds = [1]                         # LED indexes on this node's strip
buzzer = true
i2c = [{ bus = 1, address = 0x77, mode = "r" }]   # "r" or "rw"

[permissions.nodes.pi4]            # a hub plugin acting on a spoke's actuators
leds = [1]
buzzer = true

[limits]
call_ms = 50                       # wall time per evaluate/poll; the sandbox is stopped past it
memory_mb = 32                     # linear memory of the sandbox (the runtime itself needs 14)

[sensor]                           # optional: the plugin measures something over I2C
interval = 10.0
quantities = ["temperature"]

[[quantities]]                     # optional: quantities beyond the built-in table, for [sensor]
name = "soil_ec"
unit = "mS/cm"
low = 0.0
high = 20.0
description = "soil electrical conductivity"
# device_class = "conductivity"    # Home Assistant's, where it has one

[config]                           # free-form: thresholds, passed to the plugin as host.config
high = 30.0
```
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hal.errors import HalConfigError, ReadingError
from hal.i2c import I2CGrants
from hal.names import NODE_NAME_RULE, is_node_name
from hal.readings import Quantity, lookup, parse_quantity
from hal.schema import ANY, NUMBER, REQUIRED, Field, Problems, all_of, between, matches, rule
from plugins.errors import ManifestError

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}\Z")
LIMITS = {"call_ms": (1, 10_000, 50), "memory_mb": (16, 1024, 32), "load_ms": (10, 60_000, 2_000)}
MAX_LED_INDEX = 1023
MAX_VERSION_CHARS = 32  # it travels in every alert event; the hub checks the same bound


@dataclass(frozen=True)
class NodeGrant:
    """What a plugin may drive on one node: LED indexes and the buzzer."""

    leds: frozenset[int] = frozenset()
    buzzer: bool = False


@dataclass(frozen=True)
class Permissions:
    """Everything a plugin may touch; anything else is refused and counted."""

    local: NodeGrant = field(default_factory=NodeGrant)
    nodes: dict[str, NodeGrant] = field(default_factory=dict)
    i2c: tuple[tuple[int, int, str], ...] = ()

    def for_node(self, node: str | None) -> NodeGrant:
        """The grant on `node` (None = the node the plugin runs on)."""
        return self.local if node is None else self.nodes.get(node, NodeGrant())


@dataclass(frozen=True)
class Limits:
    """Per-call time limit, sandbox memory and load-time limit."""

    call_ms: int = 50
    memory_mb: int = 32
    load_ms: int = 2_000


@dataclass(frozen=True)
class SensorSpec:
    """A sensor the plugin implements with poll(host)."""

    interval: float
    quantities: tuple[str, ...]


@dataclass(frozen=True)
class Manifest:
    """A validated plugin manifest."""

    name: str
    version: str
    description: str = ""
    quantities: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()
    permissions: Permissions = field(default_factory=Permissions)
    limits: Limits = field(default_factory=Limits)
    config: dict[str, Any] = field(default_factory=dict)
    sensor: SensorSpec | None = None
    path: str = "<manifest>"
    declares: tuple[Quantity, ...] = ()  # its [[quantities]]

    def config_json(self) -> str:
        """The [config] table as JSON text (what the plugin's load() receives)."""
        return json.dumps(self.config, separators=(",", ":"))

    def wants(self, quantities: set[str], node: str, own_node: str) -> bool:
        """True if a batch of `node` with these quantities concerns the plugin (run on `own_node`)."""
        if self.nodes:
            if node not in self.nodes and "*" not in self.nodes:
                return False
        elif node != own_node:
            return False  # by default a plugin judges its own node: a hub does not re-judge spokes
        return not self.quantities or bool(self.quantities & quantities)

    def summary(self) -> dict[str, Any]:
        """Plain-types view for status and the wire."""
        p = self.permissions
        return {"name": self.name, "version": self.version, "description": self.description,
                "quantities": sorted(self.quantities), "nodes": sorted(self.nodes),
                "permissions": {"leds": sorted(p.local.leds), "buzzer": p.local.buzzer,
                                "i2c": [{"bus": b, "address": a, "mode": m} for b, a, m in p.i2c],
                                "nodes": {n: {"leds": sorted(g.leds), "buzzer": g.buzzer} for n, g in p.nodes.items()}},
                "limits": {"call_ms": self.limits.call_ms, "memory_mb": self.limits.memory_mb,
                           "load_ms": self.limits.load_ms},
                "sensor": None if self.sensor is None else {"interval": self.sensor.interval,
                                                            "quantities": list(self.sensor.quantities)},
                "config": self.config}


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _string_list(v: list[Any]) -> str | None:
    return None if all(isinstance(s, str) for s in v) else f"must be a list of strings, got {v!r}"


def _judged_nodes(v: list[str]) -> str | None:
    bad = [n for n in v if n != "*" and not is_node_name(n)]
    return "; ".join(f"{n!r} is not a node name ({NODE_NAME_RULE}) or \"*\"" for n in bad) or None


def _json_safe(config: dict[str, Any]) -> str | None:
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as exc:
        # TOML dates and times have no JSON form; the plugin would never see them
        return f"must hold only strings, numbers, booleans, arrays and tables: {exc}"
    return None


def _integer(low: int, high: int, default: int) -> Field:
    expect = f"an integer {low}..{high}"
    return Field(int, default, between(low, high, expect), expect=expect)


_STRINGS = "a list of strings"
_LEDS = f"a list of LED indexes 0..{MAX_LED_INDEX}"
_VERSION = f"a string of 1..{MAX_VERSION_CHARS} characters"
_SECONDS = "a number of seconds 0.2..86400"
_QUANTITIES = Field(list, [], _string_list, expect=_STRINGS)
_TABLE = Field(dict, {}, expect="a table")

MANIFEST_KEYS = {"plugin": _TABLE, "permissions": _TABLE, "limits": _TABLE,
                 "config": Field(dict, {}, _json_safe, expect="a table"),  # free-form: the plugin's own
                 "sensor": Field(dict, None, expect="a table"),
                 "quantities": Field(list, [], expect="an array of tables ([[quantities]])")}
PLUGIN_KEYS = {
    "name": Field(str, REQUIRED, matches(NAME_RE, "[a-z][a-z0-9_]{0,47}")),
    "version": Field(str, REQUIRED, rule(lambda v: 0 < len(v.strip()) <= MAX_VERSION_CHARS, _VERSION), expect=_VERSION),
    "description": Field(str, "", expect="a string"),
    "quantities": _QUANTITIES,
    "nodes": Field(list, [], all_of(_string_list, _judged_nodes), expect=_STRINGS),
}
GRANT_KEYS = {
    "leds": Field(list, [], rule(lambda v: all(_int(i) and 0 <= i <= MAX_LED_INDEX for i in v), _LEDS), expect=_LEDS),
    "buzzer": Field(bool, False, expect="true or false"),
}
PERMISSION_KEYS = {**GRANT_KEYS, "i2c": Field(list, [], expect="a list of {bus, address, mode} tables"),
                   "nodes": _TABLE}  # node name -> GRANT_KEYS
# Only the keys here: the bus layer judges the values (_i2c), one source of truth.
I2C_KEYS = {"bus": Field(ANY, None), "address": Field(ANY, None), "mode": Field(ANY, "r")}
LIMIT_KEYS = {key: _integer(low, high, default) for key, (low, high, default) in LIMITS.items()}
SENSOR_KEYS = {"interval": Field(NUMBER, 10.0, between(0.2, 86_400, _SECONDS), expect=_SECONDS),
               "quantities": _QUANTITIES}


def _grant(t: dict[str, Any]) -> NodeGrant:
    return NodeGrant(frozenset(t["leds"] or ()), bool(t["buzzer"]))


def _i2c(p: Problems, rows: list[Any]) -> tuple[tuple[int, int, str], ...]:
    out = []
    for i, row in enumerate(rows):
        t = p.table(f"permissions.i2c[{i}]", row, I2C_KEYS)
        out.append((t["bus"], t["address"], t["mode"]))
    try:
        I2CGrants(out, open_bus=lambda n: None)  # the bus layer's own checks, one source of truth
    except HalConfigError as exc:
        p.add("permissions.i2c", str(exc))
        return ()
    return tuple(out)


def parse_manifest(data: dict[str, Any], where: str = "<manifest>", expected_name: str | None = None) -> Manifest:
    """Validate a parsed manifest; raise ManifestError listing every problem."""
    p = Problems()
    top = p.table("", data, MANIFEST_KEYS)
    meta = p.table("plugin", top["plugin"] or {}, PLUGIN_KEYS)
    if meta["name"] is not None and expected_name is not None and meta["name"] != expected_name:
        p.add("plugin.name", f"{meta['name']!r} does not match the plugin file name {expected_name!r}")

    perms = p.table("permissions", top["permissions"] or {}, PERMISSION_KEYS)
    nodes: dict[str, NodeGrant] = {}
    for node, grant in (perms["nodes"] or {}).items():
        if not is_node_name(node):
            p.add(f"permissions.nodes.{node}", f"node names match {NODE_NAME_RULE}")
        nodes[node] = _grant(p.table(f"permissions.nodes.{node}", grant, GRANT_KEYS))
    limits = p.table("limits", top["limits"] or {}, LIMIT_KEYS)

    s = p.table("sensor", top["sensor"], SENSOR_KEYS) if top["sensor"] is not None else None
    if s is not None and s["quantities"] == []:
        p.add("sensor.quantities", "a sensor must name at least one quantity")
    i2c = _i2c(p, perms["i2c"] or [])
    declares = _declares(p, top["quantities"] or [])
    own = {q.name for q in declares}
    for key, names in (("plugin.quantities", meta["quantities"]), ("sensor.quantities", s and s["quantities"])):
        for q in names or []:
            if q not in own and lookup(q) is None:
                p.add(key, f"unknown quantity {q!r}: neither built in nor declared (add a [[quantities]] table)")
    if p:
        raise ManifestError(f"{where}: " + "; ".join(f"{key}: {msg}" if key else msg for key, msg in p))
    return Manifest(name=meta["name"], version=meta["version"], description=meta["description"],
                    quantities=frozenset(meta["quantities"]), nodes=frozenset(meta["nodes"]),
                    permissions=Permissions(_grant(perms), nodes, i2c), limits=Limits(**limits),
                    config=dict(top["config"]),
                    sensor=None if s is None else SensorSpec(float(s["interval"]), tuple(s["quantities"])),
                    path=where, declares=declares)


def _declares(p: Problems, rows: list[Any]) -> tuple[Quantity, ...]:
    out: list[Quantity] = []
    for i, row in enumerate(rows):
        try:
            q = parse_quantity(row, f"quantities[{i}]")
        except ReadingError as exc:
            p.add(f"quantities[{i}]", str(exc))
            continue
        if any(o.name == q.name for o in out):
            p.add(f"quantities[{i}]", f"{q.name} is declared twice")
        out.append(q)
    return tuple(out)


def read_manifest(path: Path | str, expected_name: str | None = None) -> tuple[Manifest, bytes]:
    """Read and validate a manifest file; returns it with the file's bytes (for fingerprints)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found (every plugin needs NAME.toml beside it)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ManifestError(f"{path}: not valid TOML: tables or arrays nested too deeply") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    return parse_manifest(data, str(path), expected_name), raw


def load_manifest(path: Path | str, expected_name: str | None = None) -> Manifest:
    """Read and validate a manifest file."""
    return read_manifest(path, expected_name)[0]
