"""Node configuration: one TOML file per node, validated with errors naming file, key and problem."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.node.jobspec import JobSpec, parse_jobs
from hal.context import MODES, EmulatedI2CDevice, MockSettings
from hal.names import NODE_NAME_RULE, is_node_name
from hal.sensor import SENSOR_KINDS

ROLES = ("hub", "spoke")
PROFILES = ("wasm", "native")


class ConfigError(ValueError):
    """One or more problems in a node config; `problems` holds (key, message) pairs."""

    def __init__(self, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        lines = [f"{path}: {key}: {msg}" if key else f"{path}: {msg}" for key, msg in problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class SensorConfig:
    """One `[[sensors]]` row: a named instance of a sensor kind with its poll interval."""

    name: str
    kind: str
    interval: float
    stale_after: float
    params: dict[str, Any]


@dataclass(frozen=True)
class LedConfig:
    """The node's WS281x strip."""

    count: int = 11
    gpio: int = 18
    brightness: float = 0.3


@dataclass(frozen=True)
class BuzzerConfig:
    """The node's buzzer."""

    gpio: int = 17
    tonal: bool = False


@dataclass(frozen=True)
class WebConfig:
    """Where the hub serves its dashboard, and its token file."""

    host: str = "127.0.0.1"
    port: int = 8080
    tokens_file: Path | None = None  # default: <state_dir>/tokens.json
    public_read: bool = True  # pages, GET APIs and /metrics without a token; false: operator token needed


@dataclass(frozen=True)
class StoreConfig:
    """How long the hub keeps raw readings and rollups."""

    raw_days: float = 30
    rollup_days: float = 400
    max_mb: float = 0  # 0 = until the disk is full


@dataclass(frozen=True)
class SecurityConfig:
    """Mutual TLS for the node's Pyro5 traffic: CA, this node's certificate and key (absolute paths)."""

    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class NodeConfig:
    """A validated node configuration."""

    path: str
    name: str
    role: str
    profile: str
    hal: str
    state_dir: Path
    hub_host: str
    hub_name: str | None  # the hub's node name; None: spokes find its aggregator by its tags
    nameserver_port: int
    embedded_nameserver: bool
    agent_host: str
    agent_port: int
    allow_insecure_lan: bool
    push_interval: float
    push_batch_limit: int
    register_interval: float
    sensors: list[SensorConfig]
    jobs: list[JobSpec]
    leds: LedConfig | None
    buzzer: BuzzerConfig | None
    plugin_dir: Path | None
    web: WebConfig | None
    store: StoreConfig = field(default_factory=StoreConfig)
    mock: MockSettings = field(default_factory=MockSettings)
    security: SecurityConfig = field(default_factory=SecurityConfig)

    @property
    def is_hub(self) -> bool:
        """True for the hub node (runs name server, aggregator and web)."""
        return self.role == "hub"


# Schema: section -> key -> (types, default or REQUIRED, checker or None).
REQUIRED = object()
_NUM = (int, float)


def _name(v: Any) -> str | None:
    return None if is_node_name(v) else f"must match {NODE_NAME_RULE}"


def _choice(options: tuple[str, ...]):
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}, got {v!r}"
    return check


def _range(low: float, high: float):
    def check(v: Any) -> str | None:
        return None if low <= v <= high else f"must be between {low} and {high}, got {v!r}"
    return check


def _host(v: Any) -> str | None:
    if v == "localhost":
        return None
    try:
        ipaddress.ip_address(v)
    except ValueError:
        if re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", v) and not v.replace(".", "").isdigit():
            return None
        return f"is not an IP address or host name: {v!r}"
    return None


_PORT = _range(0, 65535)

SCHEMA: dict[str, dict[str, tuple[Any, Any, Any]]] = {
    "node": {
        "name": (str, REQUIRED, _name),
        "role": (str, REQUIRED, _choice(ROLES)),
        "profile": (str, "wasm", _choice(PROFILES)),
        "hal": (str, "mock", _choice(MODES)),
        "state_dir": (str, REQUIRED, None),
    },
    "hub": {
        "host": (str, REQUIRED, _host),
        "name": (str, None, _name),
        "nameserver_port": (int, 9090, _range(1, 65535)),
        "embedded_nameserver": (bool, True, None),
    },
    "agent": {
        "host": (str, "127.0.0.1", _host),
        "port": (int, 0, _PORT),
        "allow_insecure_lan": (bool, False, None),
        "register_interval": (_NUM, 5.0, _range(1, 3600)),
    },
    "push": {"interval": (_NUM, 5.0, _range(0.1, 3600)), "batch_limit": (int, 50, _range(1, 500))},
    "leds": {
        "count": (int, 11, _range(1, 1024)),
        "gpio": (int, 18, _range(0, 53)),
        "brightness": (_NUM, 0.3, _range(0, 1)),
    },
    "buzzer": {"gpio": (int, 17, _range(0, 53)), "tonal": (bool, False, None)},
    "plugins": {"dir": (str, REQUIRED, None)},
    "web": {"host": (str, "127.0.0.1", _host), "port": (int, 8080, _PORT), "tokens_file": (str, "", None),
            "public_read": (bool, True, None)},
    "store": {"raw_days": (_NUM, 30, _range(0.01, 3650)), "rollup_days": (_NUM, 400, _range(1, 36500)),
              "max_mb": (_NUM, 0, _range(0, 10_000_000))},
    "mock": {
        "room_seed": (int, 1, None),
        "bus_error_rate": (_NUM, 0.0, _range(0, 0.5)),
        "i2c": (list, None, None),
    },
    # ca/cert/key are required only when tls = true; _security checks that.
    "security": {"tls": (bool, False, None), "ca": (str, None, None), "cert": (str, None, None),
                 "key": (str, None, None)},
}
SENSOR_KEYS = {
    "name": (str, REQUIRED, _name),
    "kind": (str, REQUIRED, _choice(tuple(SENSOR_KINDS))),
    "interval": (_NUM, 5.0, _range(0.2, 86400)),
    "stale_after": (_NUM, None, _range(1, 864000)),
}
OPTIONAL_SECTIONS = {"leds", "buzzer", "plugins", "web", "mock", "push", "agent", "store", "security"}


def _type_name(types: Any) -> str:
    if isinstance(types, tuple):
        return " or ".join("number" if t is float else t.__name__ for t in types)
    return {"str": "string", "int": "integer", "bool": "boolean"}.get(types.__name__, types.__name__)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def table(self, where: str, data: Any, keys: dict[str, tuple[Any, Any, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if not isinstance(data, dict):
            self.problems.append((where, f"must be a table, got {type(data).__name__}"))
            return out
        for key in data:
            if key not in keys:
                self.problems.append((f"{where}.{key}", f"unknown key (known: {', '.join(keys)})"))
        for key, (types, default, check) in keys.items():
            out[key] = self.value(f"{where}.{key}", data.get(key, default), types, default, check)
        return out

    def value(self, where: str, v: Any, types: Any, default: Any, check: Any) -> Any:
        if v is REQUIRED:
            self.problems.append((where, "missing (required)"))
            return None
        if v is None or v is default:
            return v
        # bool is an int in Python; a config saying `port = true` is still wrong.
        ok = isinstance(v, types) and not (isinstance(v, bool) and types is not bool and bool not in
                                           (types if isinstance(types, tuple) else (types,)))
        if not ok:
            self.problems.append((where, f"must be {_type_name(types)}, got {type(v).__name__} {v!r}"))
            return None
        if check and (msg := check(v)):
            self.problems.append((where, msg))
            return None
        return v


def _apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply `section.key=value` (value in TOML syntax, bare words taken as strings)."""
    key, sep, raw = assignment.partition("=")
    if not sep or "." not in key:
        raise ConfigError("--set", [(assignment, "expected section.key=value")])
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    section, _, name = key.strip().partition(".")
    data.setdefault(section, {})[name] = value


def load_config(path: str | Path, overrides: list[str] | None = None) -> NodeConfig:
    """Read, validate and return a node config; raise ConfigError listing every problem."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(p), [("", "file not found")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), [("", f"not valid TOML: {exc}")]) from None
    for assignment in overrides or []:
        _apply_override(data, assignment)
    return parse_config(data, str(p), base_dir=p.resolve().parent)


def parse_config(data: dict[str, Any], path: str = "<config>", base_dir: Path | None = None) -> NodeConfig:
    """Validate an already-parsed TOML document."""
    base = base_dir or Path.cwd()
    c = _Checker()
    for section in data:
        if section not in SCHEMA and section not in ("sensors", "jobs"):
            c.problems.append((section, f"unknown section (known: {', '.join([*SCHEMA, 'sensors', 'jobs'])})"))
    for section in ("node", "hub"):
        if section not in data:
            c.problems.append((section, "missing section"))
    t = {}
    for s, keys in SCHEMA.items():
        if s in data or s not in OPTIONAL_SECTIONS:
            t[s] = c.table(s, data.get(s, {}), keys)
        else:  # an absent optional section takes its defaults; its required keys do not apply
            t[s] = {k: (None if d is REQUIRED else d) for k, (_, d, _) in keys.items()}
    sensors = _sensors(c, data.get("sensors", []))
    role = data.get("node", {}).get("role") if isinstance(data.get("node"), dict) else None
    jobs = parse_jobs(data.get("jobs"), role or "spoke", c.problems)
    mock = _mock(c, t["mock"])
    security = _security(c, t["security"], base)
    node = t["node"]
    hub_name = t["hub"].get("name")
    if hub_name and node.get("role") == "hub" and hub_name != node.get("name"):
        c.problems.append(("hub.name", f"names hub {hub_name!r}, but this hub is called {node.get('name')!r}"))
    if c.problems:
        raise ConfigError(path, c.problems)

    def resolve(p: str) -> Path:
        return (base / Path(p).expanduser()).resolve()

    agent = t["agent"]
    is_hub = node["role"] == "hub"
    return NodeConfig(
        path=path, name=node["name"], role=node["role"], profile=node["profile"], hal=node["hal"],
        state_dir=resolve(node["state_dir"]),
        hub_host=t["hub"]["host"], hub_name=t["hub"]["name"], nameserver_port=t["hub"]["nameserver_port"],
        embedded_nameserver=t["hub"]["embedded_nameserver"],
        agent_host=agent["host"], agent_port=agent["port"],
        allow_insecure_lan=agent["allow_insecure_lan"], register_interval=float(agent["register_interval"]),
        push_interval=float(t["push"]["interval"]), push_batch_limit=t["push"]["batch_limit"], sensors=sensors,
        jobs=jobs,
        leds=LedConfig(**t["leds"]) if "leds" in data else None,
        buzzer=BuzzerConfig(**t["buzzer"]) if "buzzer" in data else None,
        plugin_dir=resolve(t["plugins"]["dir"]) if "plugins" in data else None,
        web=WebConfig(t["web"]["host"], t["web"]["port"],
                      resolve(t["web"]["tokens_file"]) if t["web"]["tokens_file"] else None,
                      public_read=t["web"]["public_read"]) if is_hub else None,
        store=StoreConfig(float(t["store"]["raw_days"]), float(t["store"]["rollup_days"]),
                          float(t["store"]["max_mb"])),
        mock=mock, security=security,
    )


def _sensors(c: _Checker, rows: Any) -> list[SensorConfig]:
    if not isinstance(rows, list):
        c.problems.append(("sensors", "must be an array of tables ([[sensors]])"))
        return []
    out: list[SensorConfig] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        where = f"sensors[{i}]"
        if not isinstance(row, dict):
            c.problems.append((where, "must be a table"))
            continue
        kind = SENSOR_KINDS.get(row.get("kind", ""))
        param_keys = {k: (p.type, p.default, None) for k, p in kind.params.items()} if kind else {}
        values = c.table(where, row, {**SENSOR_KEYS, **param_keys})
        name = values.get("name")
        if name in seen:
            c.problems.append((f"{where}.name", f"duplicate sensor name {name!r}"))
        seen.add(name)
        if not kind or name is None or values.get("interval") is None:
            continue
        params = {k: values[k] for k in kind.params if values.get(k) is not None}
        interval = float(values["interval"])
        stale = values.get("stale_after")
        out.append(SensorConfig(name, kind.kind, interval, float(stale) if stale else 3 * interval, params))
    return out


def _security(c: _Checker, t: dict[str, Any], base: Path) -> SecurityConfig:
    """Paths resolve against the config file's folder; with tls on, each is required.

    The files themselves are checked when the node starts (nameserver.security), so a config can
    be validated away from the board that holds its key."""
    paths: dict[str, Path | None] = {}
    for key in ("ca", "cert", "key"):
        raw = t.get(key)
        paths[key] = (base / Path(raw).expanduser()).resolve() if raw else None
        if t.get("tls") and not raw:
            c.problems.append((f"security.{key}", "missing (required when security.tls = true)"))
    return SecurityConfig(bool(t.get("tls")), paths["ca"], paths["cert"], paths["key"])


def _mock(c: _Checker, t: dict[str, Any]) -> MockSettings:
    settings = MockSettings(room_seed=t.get("room_seed") or 1, bus_error_rate=float(t.get("bus_error_rate") or 0))
    rows = t.get("i2c")
    if rows is None:
        return settings
    devices = []
    keys = {"bus": (int, REQUIRED, _range(0, 255)), "address": (int, REQUIRED, _range(0x03, 0x77)),
            "chip": (str, "bme680", _choice(("bme680", "bme688")))}
    for i, row in enumerate(rows):
        v = c.table(f"mock.i2c[{i}]", row, keys)
        if None not in (v["bus"], v["address"]):
            devices.append(EmulatedI2CDevice(v["bus"], v["address"], v["chip"] or "bme680"))
    settings.i2c_devices = devices
    return settings


def check_fleet(configs: list[NodeConfig]) -> list[str]:
    """Problems only visible across files: a spoke naming a hub that none of the given hub configs is.

    Silent when no hub config is among them: the hub may be checked elsewhere."""
    hubs = {c.name: c.path for c in configs if c.is_hub}
    if not hubs:
        return []
    problems = []
    for c in configs:
        if not c.is_hub and c.hub_name and c.hub_name not in hubs:
            known = ", ".join(f"{name!r} ({path})" for name, path in sorted(hubs.items()))
            problems.append(f"{c.path}: hub.name: names hub {c.hub_name!r}, but the hub config given is {known}")
    return problems
