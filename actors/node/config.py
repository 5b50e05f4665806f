"""Node configuration: one TOML file per node, validated with errors naming file, key and problem."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import re
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.node.jobspec import JobSpec, parse_jobs
from hal.context import MODES, EmulatedI2CDevice, MockSettings
from hal.errors import ReadingError
from hal.files import InputFileError, read_text_limited
from hal.readings import MAX_DECLARED, Quantity, conflict, parse_quantity
from hal.schema import NUMBER, REQUIRED, Field, Problems, between, matches, node_name, one_of, rule
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
class MqttConfig:
    """The broker the hub publishes the fleet to, for Home Assistant's MQTT discovery."""

    host: str
    port: int = 1883
    username: str = ""
    password_file: Path | None = None
    tls: bool = False
    ca: Path | None = None  # with tls: the broker's CA (default: the system's)
    client_id: str = ""  # default: harvester-<hub>
    discovery_prefix: str = "homeassistant"
    base_topic: str = "harvester"
    keepalive: int = 30


@dataclass(frozen=True)
class NotifyConfig:
    """One `[[notify]]` table: where alert messages go, which alerts, how often, and when not."""

    name: str
    kind: str  # ntfy | webhook | email | apprise
    severities: tuple[str, ...] = ("info", "warning", "critical")
    nodes: tuple[str, ...] = ()  # () = every node
    plugins: tuple[str, ...] = ()  # () = every plugin
    repeat: float = 0.0  # seconds between reminders of an unacknowledged alert; 0 = none
    quiet_start: int | None = None  # minutes after local midnight; non-critical messages wait for the digest
    quiet_end: int | None = None
    timezone: str = ""  # quiet hours' zone ("" = the hub's local time)
    rate_per_hour: int = 20
    timeout: float = 10.0
    url: str = ""  # ntfy (server URL with the topic) and webhook
    token_file: Path | None = None  # ntfy
    secret_file: Path | None = None  # webhook: HMAC-SHA256 signature
    host: str = ""  # email: the SMTP server
    port: int = 0  # 0: the standard port of `security` (587 starttls, 465 ssl, 25 none)
    security: str = "starttls"  # starttls | ssl | none
    username: str = ""
    password_file: Path | None = None
    sender: str = ""
    to: tuple[str, ...] = ()
    ca: Path | None = None
    urls_file: Path | None = None  # apprise: one Apprise URL per line


@dataclass(frozen=True)
class SecurityConfig:
    """Mutual TLS for the node's Pyro5 traffic: CA, this node's certificate and key (absolute paths)."""

    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class ExportTarget:
    """One `[[export]]` table: a time-series engine the hub streams every reading to."""

    name: str
    url: str  # the engine's write endpoint, e.g. http://127.0.0.1:8428/write
    database: str = ""  # InfluxDB 1.x `db`
    org: str = ""  # InfluxDB 2.x
    bucket: str = ""
    token_file: Path | None = None  # sent as "Authorization: <token_scheme> <token>"
    token_scheme: str = "Token"
    username: str = ""  # HTTP basic auth, with the password from password_file
    password_file: Path | None = None
    ca: Path | None = None  # CA bundle for an https URL (default: the system's)
    batch_size: int = 5000
    flush_interval: float = 2.0
    timeout: float = 10.0
    measurement: str = "harvester"


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
    # every hub's name server as (host, port); one entry (hub_host, nameserver_port) for one hub
    hub_hosts: list[tuple[str, int]] = field(default_factory=list)
    cluster_secret_file: Path | None = None
    exports: list[ExportTarget] = field(default_factory=list)
    quantities: list[Quantity] = field(default_factory=list)  # [[quantities]]: beyond the built-in table
    mqtt: MqttConfig | None = None  # hub only: Home Assistant over MQTT
    notify: list[NotifyConfig] = field(default_factory=list)  # hub only: [[notify]] channels
    # spoke: keep readings stamped by an unsynchronised clock in the outbox until it syncs
    push_hold_unsynced: bool = True

    def __post_init__(self) -> None:
        if not self.hub_hosts:
            self.hub_hosts = [(self.hub_host, self.nameserver_port)]

    @property
    def is_hub(self) -> bool:
        """True for the hub node (runs name server, aggregator and web)."""
        return self.role == "hub"

    @property
    def is_cluster(self) -> bool:
        """True when the fleet has several hubs (readings on every one, control state by Raft)."""
        return len(self.hub_hosts) > 1

    @property
    def majority(self) -> int:
        """How many hubs must hold a batch before a spoke deletes it (all of one, 2 of 3, 3 of 5)."""
        return len(self.hub_hosts) // 2 + 1


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


_PORT = between(0, 65535)
# an MQTT topic prefix: levels of letters, digits, _ and -, no wildcards
_TOPIC = matches(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*\Z", "levels of [A-Za-z0-9_-] joined by /")
_GPIO = between(0, 53)

# section -> key -> Field(types, default or REQUIRED, check); hal.schema checks each table.
SCHEMA: dict[str, dict[str, Field]] = {
    "node": {
        "name": Field(str, REQUIRED, node_name),
        "role": Field(str, REQUIRED, one_of(ROLES)),
        "profile": Field(str, "wasm", one_of(PROFILES)),
        "hal": Field(str, "mock", one_of(MODES)),
        # empty would put the outbox beside the config file, wherever that is
        "state_dir": Field(str, REQUIRED, rule(lambda v: v.strip() != "", "a folder path, not empty")),
    },
    "hub": {
        # required unless hosts lists the hubs; on a hub, the address its name server listens on
        "host": Field(str, None, _host),
        "name": Field(str, None, node_name),
        "nameserver_port": Field(int, 9090, between(1, 65535)),
        "embedded_nameserver": Field(bool, True),
        # several hubs: every hub's name server as "host" or "host:port" (port: nameserver_port)
        "hosts": Field(list, None, expect="a list of 1 to 5 \"host\" or \"host:port\" strings"),
        "cluster_secret_file": Field(str, None, rule(lambda v: v.strip() != "", "a file path, not empty")),
    },
    "agent": {
        "host": Field(str, "127.0.0.1", _host),
        "port": Field(int, 0, _PORT),
        "allow_insecure_lan": Field(bool, False),
        "register_interval": Field(NUMBER, 5.0, between(1, 3600)),
    },
    "push": {"interval": Field(NUMBER, 5.0, between(0.1, 3600)), "batch_limit": Field(int, 50, between(1, 500)),
             "hold_unsynced": Field(bool, True)},
    "leds": {
        "count": Field(int, 11, between(1, 1024)),
        "gpio": Field(int, 18, _GPIO),
        "brightness": Field(NUMBER, 0.3, between(0, 1)),
    },
    "buzzer": {"gpio": Field(int, 17, _GPIO), "tonal": Field(bool, False)},
    "plugins": {"dir": Field(str, REQUIRED)},
    "web": {"host": Field(str, "127.0.0.1", _host), "port": Field(int, 8080, _PORT), "tokens_file": Field(str, ""),
            "public_read": Field(bool, True)},
    "store": {"raw_days": Field(NUMBER, 30, between(0.01, 3650)), "rollup_days": Field(NUMBER, 400, between(1, 36500)),
              "max_mb": Field(NUMBER, 0, between(0, 10_000_000))},
    "mock": {
        "room_seed": Field(int, 1),
        "bus_error_rate": Field(NUMBER, 0.0, between(0, 0.5)),
        "i2c": Field(list, None),
    },
    # ca/cert/key are required only when tls = true; _security checks that.
    "mqtt": {
        "host": Field(str, REQUIRED, _host), "port": Field(int, 1883, between(1, 65535)),
        "username": Field(str, ""), "password_file": Field(str, ""), "tls": Field(bool, False), "ca": Field(str, ""),
        # MQTT 3.1.1 allows 23 characters in a client id; brokers take more, but not all
        "client_id": Field(str, "", rule(lambda v: len(v) <= 64 and v.isprintable(), "at most 64 printable characters")),
        "discovery_prefix": Field(str, "homeassistant", _TOPIC), "base_topic": Field(str, "harvester", _TOPIC),
        "keepalive": Field(int, 30, between(5, 3600)),
    },
    "security": {"tls": Field(bool, False), "ca": Field(str, None), "cert": Field(str, None),
                 "key": Field(str, None)},
}
SENSOR_KEYS = {
    "name": Field(str, REQUIRED, node_name),
    "kind": Field(str, REQUIRED, one_of(SENSOR_KINDS)),
    "interval": Field(NUMBER, 5.0, between(0.2, 86400)),
    "stale_after": Field(NUMBER, None, between(1, 864000)),
}
# chips a mock node's emulated bus carries besides those its sensors place: a plugin may read them
MOCK_CHIPS = ("bme680", "bme688", *(k for k, kind in SENSOR_KINDS.items() if kind.emulation and "address" in kind.params))
MOCK_I2C_KEYS = {"bus": Field(int, REQUIRED, between(0, 255)), "address": Field(int, REQUIRED, between(0x03, 0x77)),
                 "chip": Field(str, "bme680", one_of(MOCK_CHIPS))}
_SAFE_NAME = matches(r"[a-z0-9][a-z0-9_.-]{0,62}\Z", "[a-z0-9][a-z0-9_.-] (up to 63)")
EXPORT_KEYS = {
    "name": Field(str, None, _SAFE_NAME),
    "url": Field(str, REQUIRED, matches(r"https?://[^\s/?#]+[^\s]*\Z", "http(s)://host[:port]/path")),
    "database": Field(str, ""), "org": Field(str, ""), "bucket": Field(str, ""),
    "token_file": Field(str, ""), "token_scheme": Field(str, "Token", one_of(("Token", "Bearer"))),
    "username": Field(str, ""), "password_file": Field(str, ""), "ca": Field(str, ""),
    "batch_size": Field(int, 5000, between(1, 100_000)),
    "flush_interval": Field(NUMBER, 2.0, between(0.1, 3600)),
    "timeout": Field(NUMBER, 10.0, between(0.5, 300)),
    "measurement": Field(str, "harvester", matches(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z", "[A-Za-z_][A-Za-z0-9_]*")),
}
LISTS = ("sensors", "jobs", "export", "quantities", "notify")  # arrays of tables, parsed on their own
OPTIONAL_SECTIONS = {"leds", "buzzer", "plugins", "web", "mock", "push", "agent", "store", "security", "mqtt"}


def _apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply `section.key=value` (value in TOML syntax, bare words taken as strings)."""
    key, sep, raw = assignment.partition("=")
    if sep and key.strip() in LISTS:  # a whole array of tables: notify=[{kind="ntfy", url="..."}]
        try:
            data[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--set", [(assignment, f"not a TOML array of tables: {exc}")]) from None
        return
    if not sep or "." not in key:
        raise ConfigError("--set", [(assignment, "expected section.key=value, or LIST=[{...}, ...] for "
                                                 f"{', '.join(LISTS)}")])
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    section, _, name = key.strip().partition(".")
    data.setdefault(section, {})[name] = value


MAX_CONFIG_BYTES = 1024 * 1024  # a node config is a few KiB; anything this big is the wrong file


def load_config(path: str | Path, overrides: list[str] | None = None) -> NodeConfig:
    """Read, validate and return a node config; raise ConfigError listing every problem."""
    p = Path(path)
    try:
        data = tomllib.loads(read_text_limited(p, MAX_CONFIG_BYTES))
    except FileNotFoundError:
        raise ConfigError(str(p), [("", "file not found")]) from None
    except InputFileError as exc:
        raise ConfigError(str(p), [("", str(exc))]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), [("", f"not valid TOML: {exc}")]) from None
    except RecursionError:
        raise ConfigError(str(p), [("", "not valid TOML: tables or arrays nested too deeply")]) from None
    for assignment in overrides or []:
        _apply_override(data, assignment)
    return parse_config(data, str(p), base_dir=p.resolve().parent)


def parse_config(data: dict[str, Any], path: str = "<config>", base_dir: Path | None = None) -> NodeConfig:
    """Validate an already-parsed TOML document."""
    base = base_dir or Path.cwd()
    c = Problems()
    for section in data:
        if section not in SCHEMA and section not in LISTS:
            c.add(section, f"unknown section (known: {', '.join([*SCHEMA, *LISTS])})")
    for section in ("node", "hub"):
        if section not in data:
            c.add(section, "missing section")
    t = {}
    for s, keys in SCHEMA.items():
        if s in data or s not in OPTIONAL_SECTIONS:
            t[s] = c.table(s, data.get(s, {}), keys)
        else:  # an absent optional section takes its defaults; its required keys do not apply
            t[s] = {k: (None if f.default is REQUIRED else f.default) for k, f in keys.items()}
    sensors = _sensors(c, data.get("sensors", []))
    role = data.get("node", {}).get("role") if isinstance(data.get("node"), dict) else None
    jobs = parse_jobs(data.get("jobs"), role or "spoke", c.items)
    mock = _mock(c, t["mock"])
    security = _security(c, t["security"], base)
    node = t["node"]
    hub_name = t["hub"].get("name")
    if hub_name and node.get("role") == "hub" and hub_name != node.get("name"):
        c.add("hub.name", f"names hub {hub_name!r}, but this hub is called {node.get('name')!r}")
    _plaintext_binds(c, t, node.get("role") == "hub")
    hub_hosts = _hub_hosts(c, t["hub"], node.get("role") == "hub")
    exports = _exports(c, data.get("export"), node.get("role") == "hub", base)
    quantities = _quantities(c, data.get("quantities", []))
    notify = _notify(c, data.get("notify"), node.get("role") == "hub", base)
    mqtt = _mqtt(c, t["mqtt"], base) if "mqtt" in data else None
    if mqtt is not None and node.get("role") != "hub":
        c.add("mqtt", "only a hub publishes to MQTT (it speaks for the whole fleet; spokes need no client)")
    if c:
        raise ConfigError(path, c.items)

    def resolve(p: str) -> Path:
        return (base / Path(p).expanduser()).resolve()

    agent = t["agent"]
    is_hub = node["role"] == "hub"
    return NodeConfig(
        path=path, name=node["name"], role=node["role"], profile=node["profile"], hal=node["hal"],
        state_dir=resolve(node["state_dir"]),
        hub_host=t["hub"]["host"] or hub_hosts[0][0], hub_name=t["hub"]["name"],
        nameserver_port=t["hub"]["nameserver_port"] if t["hub"]["host"] else hub_hosts[0][1],
        hub_hosts=hub_hosts,
        cluster_secret_file=_path(base, t["hub"]["cluster_secret_file"]),
        embedded_nameserver=t["hub"]["embedded_nameserver"],
        agent_host=agent["host"], agent_port=agent["port"],
        allow_insecure_lan=agent["allow_insecure_lan"], register_interval=float(agent["register_interval"]),
        push_interval=float(t["push"]["interval"]), push_batch_limit=t["push"]["batch_limit"], sensors=sensors,
        jobs=jobs,
        leds=LedConfig(**t["leds"]) if "leds" in data else None,
        buzzer=BuzzerConfig(**t["buzzer"]) if "buzzer" in data else None,
        plugin_dir=resolve(t["plugins"]["dir"]) if "plugins" in data else None,
        web=WebConfig(t["web"]["host"], t["web"]["port"],
                      _path(base, t["web"]["tokens_file"]),
                      public_read=t["web"]["public_read"]) if is_hub else None,
        store=StoreConfig(float(t["store"]["raw_days"]), float(t["store"]["rollup_days"]),
                          float(t["store"]["max_mb"])),
        mock=mock, security=security, exports=exports, quantities=quantities, mqtt=mqtt, notify=notify,
        push_hold_unsynced=t["push"]["hold_unsynced"],
    )


MAX_HUBS = 5  # Raft needs a majority for every control write: 5 hubs ride out two down, more only add traffic


def _hub_hosts(c: Problems, t: dict[str, Any], is_hub: bool) -> list[tuple[str, int]]:
    """`hub.hosts` as [(host, port)], or [(hub.host, nameserver_port)] without it; problems go to `c`."""
    default_port = t.get("nameserver_port") if isinstance(t.get("nameserver_port"), int) else 9090
    raw = t.get("hosts")
    if raw is None:
        if not t.get("host"):
            if not any(where == "hub.host" for where, _ in c.items):
                c.add("hub.host", "missing (required unless hub.hosts lists the hubs)")
            return [("127.0.0.1", default_port)]
        return [(t["host"], default_port)]
    out: list[tuple[str, int]] = []
    if not 1 <= len(raw) <= MAX_HUBS:
        c.add("hub.hosts", f"lists {len(raw)} hubs; give 1 to {MAX_HUBS} (3 ride out one hub down, 5 two)")
    for i, entry in enumerate(raw):
        host, sep, port_text = entry.rpartition(":") if isinstance(entry, str) else ("", "", "")
        if isinstance(entry, str) and not sep:
            host, port_text = entry, str(default_port)
        problem = _host(host) if host else "is empty"
        if not isinstance(entry, str) or problem or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            c.add(f"hub.hosts[{i}]", f'must be "host" or "host:port" (port 1-65535), got {entry!r}')
            continue
        if (host, int(port_text)) in out:
            c.add(f"hub.hosts[{i}]", f"{entry!r} is listed twice")
        out.append((host, int(port_text)))
    if len(out) > 1 and is_hub:
        own = (t.get("host"), default_port)
        if t.get("host") and own not in out:
            c.add("hub.hosts", f"does not list this hub itself ({own[0]}:{own[1]}, from hub.host and "
                               "hub.nameserver_port); every hub's config lists all hubs, itself included")
        if not t.get("host"):
            c.add("hub.host", "missing: a hub of several names the address it listens on")
        if not t.get("cluster_secret_file"):
            c.add("hub.cluster_secret_file", "missing (required with several hubs): a file holding the secret "
                                             "the hubs share to encrypt and authenticate their Raft traffic")
    return out or [("127.0.0.1", default_port)]


SEVERITIES = ("info", "warning", "critical")
_NAMES = rule(lambda v: all(isinstance(x, str) and 0 < len(x) <= 64 for x in v), "a list of names")
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]):([0-5][0-9])\Z")
NOTIFY_KEYS = {
    "name": Field(str, None, _SAFE_NAME), "kind": Field(str, REQUIRED, one_of(("ntfy", "webhook", "email", "apprise"))),
    "severities": Field(list, list(SEVERITIES), rule(lambda v: set(v) <= set(SEVERITIES) and v,
                                                     "a non-empty list of info, warning, critical")),
    "nodes": Field(list, [], _NAMES), "plugins": Field(list, [], _NAMES),
    "repeat": Field(NUMBER, 0, between(0, 7 * 86400, "seconds, 0 (no reminders) to a week")),
    "quiet_hours": Field(str, "", rule(lambda v: v == "" or _CLOCK.match(v), "HH:MM-HH:MM (e.g. 22:00-07:00)")),
    "timezone": Field(str, ""), "rate_per_hour": Field(int, 20, between(1, 3600)),
    "timeout": Field(NUMBER, 10.0, between(1, 120)),
    "url": Field(str, "", rule(lambda v: v == "" or re.match(r"https?://[^\s/?#]+", v), "an http(s):// URL")),
    "token_file": Field(str, ""), "secret_file": Field(str, ""),
    "host": Field(str, ""), "port": Field(int, 0, between(0, 65535)),
    "security": Field(str, "starttls", one_of(("starttls", "ssl", "none"))),
    "username": Field(str, ""), "password_file": Field(str, ""), "from": Field(str, ""),
    "to": Field(list, [], rule(lambda v: all(isinstance(x, str) and "@" in x for x in v), "a list of addresses")),
    "ca": Field(str, ""), "urls_file": Field(str, ""),
}
# the keys each kind needs beyond the common ones (and the ones it may have)
NOTIFY_NEEDS = {"ntfy": ("url",), "webhook": ("url",), "email": ("host", "from", "to"), "apprise": ("urls_file",)}
NOTIFY_ALLOWS = {"ntfy": {"url", "token_file", "ca"}, "webhook": {"url", "secret_file", "ca"},
                 "email": {"host", "port", "security", "username", "password_file", "from", "to", "ca"},
                 "apprise": {"urls_file"}}
NOTIFY_COMMON = {"name", "kind", "severities", "nodes", "plugins", "repeat", "quiet_hours", "timezone",
                 "rate_per_hour", "timeout"}


def _notify(c: Problems, raw: Any, is_hub: bool, base: Path) -> list[NotifyConfig]:
    """`[[notify]]`: channels alert messages go to (hub only)."""
    if raw is None:
        return []
    if not is_hub:
        c.add("notify", "only a hub sends notifications (it holds every node's alerts)")
        return []
    rows = [raw] if isinstance(raw, dict) else raw
    if not isinstance(rows, list):
        c.add("notify", "must be an array of tables ([[notify]])")
        return []
    out: list[NotifyConfig] = []
    for i, row in enumerate(rows):
        where = f"notify[{i}]" if isinstance(raw, list) else "notify"
        v = c.table(where, row, NOTIFY_KEYS)
        kind = v.get("kind")
        if kind is None or any(v.get(k) is None for k in NOTIFY_KEYS if k != "name"):
            continue
        for key in NOTIFY_NEEDS[kind]:
            if not v[key]:
                c.add(f"{where}.{key}", f"missing (a {kind} channel needs it)")
        for key in sorted(set(row) - NOTIFY_COMMON - NOTIFY_ALLOWS[kind]):
            c.add(f"{where}.{key}", f"does not apply to a {kind} channel")
        if v["timezone"]:
            try:
                from zoneinfo import ZoneInfo

                ZoneInfo(v["timezone"])
            except (KeyError, ValueError):
                c.add(f"{where}.timezone", f"unknown time zone {v['timezone']!r} (e.g. Europe/Berlin)")
        name = v["name"] or f"{kind}{'' if not any(o.kind == kind for o in out) else len(out)}"
        if any(o.name == name for o in out):
            c.add(f"{where}.name", f"another channel is already called {name!r}")
        quiet = _CLOCK.match(v["quiet_hours"]) if v["quiet_hours"] else None
        start, end = ((int(quiet[1]) * 60 + int(quiet[2]), int(quiet[3]) * 60 + int(quiet[4])) if quiet
                      else (None, None))
        if quiet and start == end:
            c.add(f"{where}.quiet_hours", "start and end are the same time")
        path = {k: _path(base, v[k]) for k in ("token_file", "secret_file", "password_file", "ca", "urls_file")}
        out.append(NotifyConfig(
            name, kind, tuple(v["severities"]), tuple(v["nodes"]), tuple(v["plugins"]), float(v["repeat"]), start, end,
            v["timezone"], v["rate_per_hour"], float(v["timeout"]), v["url"], path["token_file"],
            path["secret_file"], v["host"], v["port"], v["security"], v["username"], path["password_file"], v["from"],
            tuple(v["to"]), path["ca"], path["urls_file"]))
    return out


def _mqtt(c: Problems, t: dict[str, Any], base: Path) -> MqttConfig | None:
    if any(v is None for v in t.values()):
        return None  # a problem was recorded
    if bool(t["username"]) != bool(t["password_file"]):
        c.add("mqtt", "give both username and password_file, or neither")
    if t["ca"] and not t["tls"]:
        c.add("mqtt.ca", "is only used with mqtt.tls = true")
    return MqttConfig(t["host"], t["port"], t["username"], _path(base, t["password_file"]), t["tls"],
                      _path(base, t["ca"]),
                      t["client_id"], t["discovery_prefix"], t["base_topic"], t["keepalive"])


def _path(base: Path, raw: str | None) -> Path | None:
    """A path key of the config: relative to the config file's folder, `~` expanded; None when unset."""
    return (base / Path(raw).expanduser()).resolve() if raw else None


def _quantities(c: Problems, rows: Any) -> list[Quantity]:
    """`[[quantities]]`: what this node measures beyond the built-in table (a built-in's unit stays)."""
    if not isinstance(rows, list):
        c.add("quantities", "must be an array of tables ([[quantities]])")
        return []
    out: list[Quantity] = []
    for i, row in enumerate(rows[:MAX_DECLARED + 1]):
        try:
            q = parse_quantity(row, f"quantities[{i}]")
        except ReadingError as exc:
            c.add(f"quantities[{i}]", str(exc).removeprefix(f"quantities[{i}]").lstrip(": .") or str(exc))
            continue
        if (problem := conflict(q, None)) is not None:
            c.add(f"quantities[{i}]", problem)
        elif any(o.name == q.name for o in out):
            c.add(f"quantities[{i}].name", f"{q.name} is declared twice")
        else:
            out.append(q)
    if len(rows) > MAX_DECLARED:
        c.add("quantities", f"at most {MAX_DECLARED} quantities per node")
    return out


def _exports(c: Problems, raw: Any, is_hub: bool, base: Path) -> list[ExportTarget]:
    """`[[export]]` (or one `[export]` table): the engines the hub streams its readings to."""
    if raw is None:
        return []
    if not is_hub:
        c.add("export", "only a hub exports (a spoke's readings reach the engine through its hub)")
        return []
    rows = [raw] if isinstance(raw, dict) else raw
    if not isinstance(rows, list):
        c.add("export", "must be a table ([export]) or an array of tables ([[export]])")
        return []
    out: list[ExportTarget] = []
    for i, row in enumerate(rows):
        where = f"export[{i}]" if isinstance(raw, list) else "export"
        v = c.table(where, row, EXPORT_KEYS)
        if v.get("url") is None or any(v.get(k) is None for k in EXPORT_KEYS if k != "name"):
            continue
        name = v["name"] or re.sub(r"[^a-z0-9_.-]", "-", urllib.parse.urlsplit(v["url"]).netloc.lower())[:63]
        if any(t.name == name for t in out):
            c.add(f"{where}.name", f"another export target is already called {name!r}; give each a name")
        if v["token_file"] and v["username"]:
            c.add(where, "give token_file or username/password_file, not both")
        if bool(v["username"]) != bool(v["password_file"]):
            c.add(where, "basic auth needs both username and password_file")
        if v["ca"] and not v["url"].startswith("https://"):
            c.add(f"{where}.ca", "is only used with an https:// url")
        paths = {k: _path(base, v[k]) for k in ("token_file", "password_file", "ca")}
        out.append(ExportTarget(name, v["url"], v["database"], v["org"], v["bucket"], paths["token_file"],
                                v["token_scheme"], v["username"], paths["password_file"], paths["ca"],
                                v["batch_size"], float(v["flush_interval"]), float(v["timeout"]), v["measurement"]))
    return out


def _sensors(c: Problems, rows: Any) -> list[SensorConfig]:
    if not isinstance(rows, list):
        c.add("sensors", "must be an array of tables ([[sensors]])")
        return []
    out: list[SensorConfig] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        where = f"sensors[{i}]"
        if not isinstance(row, dict):
            c.add(where, "must be a table")
            continue
        kind = SENSOR_KINDS.get(row["kind"]) if isinstance(row.get("kind"), str) else None
        param_keys = {k: Field(p.type, p.default, p.check) for k, p in kind.params.items()} if kind else {}
        values = c.table(where, row, {**SENSOR_KEYS, **param_keys})
        name = values.get("name")
        if name in seen:
            c.add(f"{where}.name", f"duplicate sensor name {name!r}")
        seen.add(name)
        if not kind or name is None or values.get("interval") is None:
            continue
        params = {k: values[k] for k in kind.params if values.get(k) is not None}
        if kind.combined is not None and all(values.get(k) is not None for k in kind.params):
            for key, message in kind.combined(kind.with_defaults(params)):
                c.add(f"{where}.{key}", message)
        interval = float(values["interval"])
        stale = values.get("stale_after")
        out.append(SensorConfig(name, kind.kind, interval, float(stale) if stale else 3 * interval, params))
    return out


def _plaintext_binds(c: Problems, t: dict[str, Any], is_hub: bool) -> None:
    """The rule the node applies before its first socket: no plaintext Pyro5 beyond loopback unless allowed."""
    from nameserver.pyro import is_loopback

    if t["security"].get("tls") or t["agent"].get("allow_insecure_lan"):
        return
    binds = [("agent.host", t["agent"].get("host"))]
    if is_hub and t["hub"].get("embedded_nameserver") is not False:
        binds.append(("hub.host", t["hub"].get("host")))  # the embedded name server listens there
    for key, host in binds:
        if isinstance(host, str) and not is_loopback(host):
            c.add(key, f"{host} is beyond loopback and security.tls is off: anyone on the LAN could call "
                       "the actors; turn on TLS ([security]) or set agent.allow_insecure_lan = true")


def _security(c: Problems, t: dict[str, Any], base: Path) -> SecurityConfig:
    """Paths resolve against the config file's folder; with tls on, each is required.

    The files themselves are checked when the node starts (nameserver.security), so a config can
    be validated away from the board that holds its key."""
    paths: dict[str, Path | None] = {}
    for key in ("ca", "cert", "key"):
        raw = t.get(key)
        paths[key] = _path(base, raw)
        if t.get("tls") and not raw:
            c.add(f"security.{key}", "missing (required when security.tls = true)")
    return SecurityConfig(bool(t.get("tls")), paths["ca"], paths["cert"], paths["key"])


def _mock(c: Problems, t: dict[str, Any]) -> MockSettings:
    settings = MockSettings(room_seed=t.get("room_seed") or 1, bus_error_rate=float(t.get("bus_error_rate") or 0))
    rows = t.get("i2c")
    if rows is None:
        return settings
    devices = []
    for i, row in enumerate(rows):
        v = c.table(f"mock.i2c[{i}]", row, MOCK_I2C_KEYS)
        kind = SENSOR_KINDS.get(v["chip"] or "")
        check = kind.params["address"].check if kind is not None else None
        if v["address"] is not None and check is not None and (message := check(v["address"])):
            c.add(f"mock.i2c[{i}].address", f"an emulated {v['chip']} must be at "
                  f"{message.removeprefix('must be ')}")
            continue
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


def check_on_this_machine(cfg: NodeConfig) -> list[tuple[str, str]]:
    """Problems only this machine can see: a state folder it cannot create or write, TLS files
    missing or not this node's. The node runs these before it starts, and `config check` too
    (unless told the config is for another machine), so a config that passes check starts."""
    problems = []
    if (message := _writable_folder(cfg.state_dir)) is not None:
        problems.append(("node.state_dir", message))
    if cfg.security.tls:
        from nameserver.security import TlsConfigError, check_node_tls

        try:
            check_node_tls(cfg)
        except TlsConfigError as exc:
            problems.append(("security", str(exc)))
    return problems


def _writable_folder(path: Path) -> str | None:
    """None when `path` is (or can be made) a folder this process can write a file into, fsynced."""
    probe = path / f".write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        what = {errno.ENOSPC: "no space left on its disk", errno.EROFS: "its file system is read-only",
                errno.EACCES: "no permission to write there", errno.ENOTDIR: "a part of the path is a file",
                errno.EEXIST: "it exists and is not a folder"}.get(exc.errno or 0, exc.strerror or str(exc))
        return f"{path}: cannot keep state there: {what}"
    return None
