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

from hal.errors import HalConfigError
from hal.i2c import I2CGrants
from hal.names import NODE_NAME_RULE, is_node_name
from hal.readings import QUANTITIES
from plugins.errors import ManifestError

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
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


class _Problems:
    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.items.append(f"{key}: {message}")

    def table(self, key: str, value: Any, known: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.add(key, f"must be a table, got {type(value).__name__}")
            return {}
        for k in value:
            if k not in known:
                self.add(f"{key}.{k}", f"unknown key (known: {', '.join(sorted(known))})")
        return value

    def raise_if_any(self) -> None:
        if self.items:
            raise ManifestError(f"{self.where}: " + "; ".join(self.items))


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _leds(p: _Problems, key: str, v: Any) -> frozenset[int]:
    if not isinstance(v, list) or not all(_int(i) and 0 <= i <= MAX_LED_INDEX for i in v):
        p.add(key, f"must be a list of LED indexes 0..{MAX_LED_INDEX}, got {v!r}")
        return frozenset()
    return frozenset(v)


def _grant(p: _Problems, key: str, data: Any) -> NodeGrant:
    t = p.table(key, data, {"leds", "buzzer"})
    buzzer = t.get("buzzer", False)
    if not isinstance(buzzer, bool):
        p.add(f"{key}.buzzer", f"must be true or false, got {buzzer!r}")
        buzzer = False
    return NodeGrant(_leds(p, f"{key}.leds", t.get("leds", [])), buzzer)


def _i2c(p: _Problems, rows: Any) -> tuple[tuple[int, int, str], ...]:
    if not isinstance(rows, list):
        p.add("permissions.i2c", "must be a list of {bus, address, mode} tables")
        return ()
    out = []
    for i, row in enumerate(rows):
        t = p.table(f"permissions.i2c[{i}]", row, {"bus", "address", "mode"})
        out.append((t.get("bus"), t.get("address"), t.get("mode", "r")))
    try:
        I2CGrants(out, open_bus=lambda n: None)  # the bus layer's own checks, one source of truth
    except HalConfigError as exc:
        p.add("permissions.i2c", str(exc))
        return ()
    return tuple(out)


def _strings(p: _Problems, key: str, v: Any, allowed: Any = None) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        p.add(key, f"must be a list of strings, got {v!r}")
        return ()
    if allowed is not None:
        for s in v:
            if s not in allowed:
                p.add(key, f"unknown quantity {s!r}")
    return tuple(v)


def _json_safe(p: _Problems, config: dict[str, Any]) -> dict[str, Any]:
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as exc:
        # TOML dates and times have no JSON form; the plugin would never see them
        p.add("config", f"must hold only strings, numbers, booleans, arrays and tables: {exc}")
        return {}
    return config


def parse_manifest(data: dict[str, Any], where: str = "<manifest>", expected_name: str | None = None) -> Manifest:
    """Validate a parsed manifest; raise ManifestError listing every problem."""
    p = _Problems(where)
    p.table("", data, {"plugin", "permissions", "limits", "config", "sensor"})
    meta = p.table("plugin", data.get("plugin", {}), {"name", "version", "description", "quantities", "nodes"})
    name, version = meta.get("name"), meta.get("version")
    if not isinstance(name, str) or not NAME_RE.match(name):
        p.add("plugin.name", f"required, must match [a-z][a-z0-9_]{{0,47}}, got {name!r}")
    elif expected_name is not None and name != expected_name:
        p.add("plugin.name", f"{name!r} does not match the plugin file name {expected_name!r}")
    if not isinstance(version, str) or not 0 < len(version.strip()) <= MAX_VERSION_CHARS:
        p.add("plugin.version", f"required, a string of 1..{MAX_VERSION_CHARS} characters, got {version!r}")
    description = meta.get("description", "")
    if not isinstance(description, str):
        p.add("plugin.description", "must be a string")
    quantities = _strings(p, "plugin.quantities", meta.get("quantities", []), QUANTITIES)
    judged = _strings(p, "plugin.nodes", meta.get("nodes", []))
    for node in judged:
        if node != "*" and not is_node_name(node):
            p.add("plugin.nodes", f"{node!r} is not a node name ({NODE_NAME_RULE}) or \"*\"")

    perms = p.table("permissions", data.get("permissions", {}), {"leds", "buzzer", "i2c", "nodes"})
    local = _grant(p, "permissions", {k: v for k, v in perms.items() if k in ("leds", "buzzer")})
    nodes: dict[str, NodeGrant] = {}
    for node, grant in p.table("permissions.nodes", perms.get("nodes", {}), set(perms.get("nodes", {}))).items():
        if not is_node_name(node):
            p.add(f"permissions.nodes.{node}", f"node names match {NODE_NAME_RULE}")
        nodes[node] = _grant(p, f"permissions.nodes.{node}", grant)

    lim = p.table("limits", data.get("limits", {}), set(LIMITS))
    limits = {}
    for key, (low, high, default) in LIMITS.items():
        v = lim.get(key, default)
        if not _int(v) or not low <= v <= high:
            p.add(f"limits.{key}", f"must be an integer {low}..{high}, got {v!r}")
            v = default
        limits[key] = v

    sensor = None
    if "sensor" in data:
        s = p.table("sensor", data["sensor"], {"interval", "quantities"})
        interval = s.get("interval", 10.0)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0.2 <= interval <= 86_400:
            p.add("sensor.interval", f"must be a number of seconds 0.2..86400, got {interval!r}")
            interval = 10.0
        sq = _strings(p, "sensor.quantities", s.get("quantities", []), QUANTITIES)
        if not sq:
            p.add("sensor.quantities", "a sensor must name at least one quantity")
        sensor = SensorSpec(float(interval), sq)

    config = p.table("config", data.get("config", {}), set(data.get("config", {}) or {}))
    config = _json_safe(p, config)
    i2c = _i2c(p, perms.get("i2c", []))
    p.raise_if_any()
    return Manifest(name=name, version=version, description=description, quantities=frozenset(quantities),
                    nodes=frozenset(judged),
                    permissions=Permissions(local, nodes, i2c),
                    limits=Limits(**limits), config=config, sensor=sensor, path=where)


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
    return parse_manifest(data, str(path), expected_name), raw


def load_manifest(path: Path | str, expected_name: str | None = None) -> Manifest:
    """Read and validate a manifest file."""
    return read_manifest(path, expected_name)[0]
