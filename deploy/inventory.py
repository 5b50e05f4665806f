#!/usr/bin/env python3
"""Read the fleet inventory (TOML) for the deploy scripts; standard library only (Python >= 3.11).

    inventory.py fields                       the record's field names, one line
    inventory.py select FILE [--node N]... [--role R] [--profile P]
                                              one record per target node (hub first), fields
                                              separated by US (0x1f), so bash can split them
                                              without eval and keep empty fields

Every problem is reported as `FILE: where: problem` on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import posixpath
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

SEP = "\x1f"
FIELDS = ("name", "host", "port", "user", "sudo", "role", "profile", "config", "plugins", "prefix", "etc",
          "service", "unit", "python", "extras", "system_site_packages", "run_as_root", "health_timeout",
          "wheelhouse", "pki")
ROLES, PROFILES, SERVICES = ("hub", "spoke"), ("wasm", "native"), ("systemd", "pidfile")
UNITS = {("hub", "wasm"): "harvester-hub.service", ("hub", "native"): "harvester-hub.service",
         ("spoke", "wasm"): "harvester-spoke.service", ("spoke", "native"): "harvester-native.service"}
# Values end up in ssh command lines and paths on the node: keep them to a shell-safe alphabet.
SAFE = re.compile(r"^[A-Za-z0-9._/@:+=,~-]+$")
NAME = re.compile(r"^[a-z0-9_-]{1,32}$")
# key -> (type, default); None = required
NODE_KEYS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "name": (str, None), "host": (str, None), "role": (str, None), "profile": (str, None), "config": (str, None),
    "user": (str, None), "port": (int, 22), "sudo": (bool, "auto"), "plugins": (str, ""),
    "prefix": (str, "/opt/harvester"), "etc": (str, "/etc/harvester"), "service": (str, "systemd"),
    "unit": (str, ""), "python": (str, "python3"), "extras": (list, []), "system_site_packages": (bool, False),
    "run_as_root": (bool, False), "health_timeout": ((int, float), 90), "wheelhouse": (str, ""),
    "pki": (str, ""),
}
PER_NODE_ONLY = {"name", "host", "role", "profile", "config"}
STATE_DIR = "/var/lib/harvester"  # what the systemd units make writable


class InventoryError(Exception):
    """Problems found in the inventory; one per line."""


def _type_ok(value: Any, types: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool) and types is not bool:
        return False
    return isinstance(value, types)


def _check_node(raw: dict[str, Any], defaults: dict[str, Any], where: str, base: Path,
                problems: list[str]) -> dict[str, str] | None:
    merged = {**defaults, **raw}
    node: dict[str, Any] = {}
    for key in raw:
        if key not in NODE_KEYS:
            problems.append(f"{where}.{key}: unknown key (known: {', '.join(NODE_KEYS)})")
    for key, (types, default) in NODE_KEYS.items():
        value = merged.get(key, default)
        if value is None:
            problems.append(f"{where}.{key}: missing (required{'' if key in PER_NODE_ONLY else ', here or in [defaults]'})")
            continue
        if value != default and not _type_ok(value, types):
            problems.append(f"{where}.{key}: must be {getattr(types, '__name__', 'a number')}, got {value!r}")
            continue
        if isinstance(value, str) and value and not SAFE.match(value):
            problems.append(f"{where}.{key}: {value!r} has characters the deploy scripts do not accept "
                            "(letters, digits and ._/@:+=,~- only)")
            continue
        node[key] = value
    if len(node) != len(NODE_KEYS):
        return None
    checks = [("name", NAME.match(node["name"]), "must match [a-z0-9_-]{1,32}"),
              ("role", node["role"] in ROLES, f"must be one of {', '.join(ROLES)}"),
              ("profile", node["profile"] in PROFILES, f"must be one of {', '.join(PROFILES)}"),
              ("service", node["service"] in SERVICES, f"must be one of {', '.join(SERVICES)}"),
              ("port", 0 < node["port"] < 65536, "must be 1..65535"),
              ("health_timeout", 0 < node["health_timeout"] <= 3600, "must be 1..3600 seconds"),
              ("extras", all(isinstance(e, str) and SAFE.match(e) for e in node["extras"]),
               "must be a list of extra names")]
    bad = [(k, msg) for k, ok, msg in checks if not ok]
    for key, msg in bad:
        problems.append(f"{where}.{key}: {msg}, got {node[key]!r}")
    if bad:
        return None
    for key in ("prefix", "etc"):
        if not node[key].startswith("/"):
            problems.append(f"{where}.{key}: must be an absolute path on the node, got {node[key]!r}")
    config = (base / node["config"]).resolve()
    plugins = (base / node["plugins"]).resolve() if node["plugins"] else None
    wheelhouse = (base / node["wheelhouse"]).resolve() if node["wheelhouse"] else None
    pki = (base / Path(node["pki"]).expanduser()).resolve() if node["pki"] else None
    if pki is not None:
        for rel in ("ca.crt", f"nodes/{node['name']}.crt", f"nodes/{node['name']}.key"):
            if not (pki / rel).is_file():
                problems.append(f"{where}.pki: {pki / rel} not found (make it with `harvester certs init` "
                                "or `harvester certs add-node`)")
    if not config.is_file():
        problems.append(f"{where}.config: file not found: {config}")
    else:
        _check_config(config, node, where, problems)
    for key, path in (("plugins", plugins), ("wheelhouse", wheelhouse)):
        if path is not None and not path.is_dir():
            problems.append(f"{where}.{key}: directory not found: {path}")
    sudo = node["sudo"] if isinstance(node["sudo"], bool) else node["user"] != "root"
    out = {k: str(v) for k, v in node.items()}
    out.update(config=str(config), plugins=str(plugins or ""), wheelhouse=str(wheelhouse or ""), pki=str(pki or ""),
               sudo="1" if sudo else "0", extras=",".join(node["extras"]),
               unit=node["unit"] or UNITS[(node["role"], node["profile"])],
               system_site_packages="1" if node["system_site_packages"] else "0",
               run_as_root="1" if node["run_as_root"] else "0", health_timeout=f"{node['health_timeout']:g}")
    return out


def _check_config(path: Path, node: dict[str, Any], where: str, problems: list[str]) -> None:
    """The node config must describe the same node; full validation is `harvester config check`."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"{where}.config: {path}: {exc}")
        return
    section = data.get("node", {}) if isinstance(data.get("node"), dict) else {}
    for key in ("name", "role", "profile"):
        have = section.get(key, "wasm" if key == "profile" else None)
        if have != node[key]:
            problems.append(f"{where}.config: {path} says node.{key} = {have!r}, the inventory says {node[key]!r}")
    plugin_dir = (data.get("plugins") or {}).get("dir") if isinstance(data.get("plugins"), dict) else None
    if node["plugins"] and plugin_dir != f"{node['etc']}/plugins":
        problems.append(f"{where}.config: {path} has plugins.dir = {plugin_dir!r}; the deploy scripts put "
                        f"plugins in {node['etc']}/plugins, so set it to that")
    _check_tls(data, path, node, where, problems)
    state_dir = section.get("state_dir", "")
    if node["service"] == "systemd" and not str(state_dir).startswith(STATE_DIR):
        print(f"warning: {where}: node.state_dir = {state_dir!r} is outside {STATE_DIR}, which is the only "
              "place the systemd units let the agent write", file=sys.stderr)


def _check_tls(data: dict[str, Any], path: Path, node: dict[str, Any], where: str, problems: list[str]) -> None:
    """With `pki`, the scripts install <etc>/tls/{ca.crt,NAME.crt,NAME.key}: the config must use those."""
    security = data.get("security") if isinstance(data.get("security"), dict) else {}
    if not node["pki"]:
        if security.get("tls"):
            print(f"warning: {where}: {path} turns TLS on but the inventory has no `pki`: copy its certificate "
                  f"and key to the node yourself", file=sys.stderr)
        return
    etc, name = node["etc"], node["name"]
    want = {"ca": f"{etc}/tls/ca.crt", "cert": f"{etc}/tls/{name}.crt", "key": f"{etc}/tls/{name}.key"}
    have = {k: posixpath.normpath(posixpath.join(etc, str(security.get(k, "")))) for k in want}
    if not security.get("tls") or have != want:
        problems.append(f"{where}.config: {path}: with `pki` the deploy scripts install the node's TLS files as "
                        f"{etc}/tls/ca.crt, {name}.crt and {name}.key: set [security] tls = true, "
                        f'ca = "tls/ca.crt", cert = "tls/{name}.crt", key = "tls/{name}.key"')


def load(path: Path) -> list[dict[str, str]]:
    """Every node of the inventory, validated, hub first; raise InventoryError listing every problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InventoryError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{path}: not valid TOML: {exc}") from None
    problems: list[str] = []
    for key in data:
        if key not in ("defaults", "nodes"):
            problems.append(f"{key}: unknown section (known: defaults, nodes)")
    defaults = data.get("defaults", {})
    for key in defaults:
        if key in PER_NODE_ONLY or key not in NODE_KEYS:
            problems.append(f"defaults.{key}: not allowed in [defaults]")
    rows = data.get("nodes", [])
    if not isinstance(rows, list) or not rows:
        problems.append("nodes: no [[nodes]] rows")
        rows = []
    nodes: list[dict[str, str]] = []
    for i, raw in enumerate(rows):
        node = _check_node(raw, {k: v for k, v in defaults.items() if k not in PER_NODE_ONLY},
                           f"nodes[{i}]", path.resolve().parent, problems)
        if node is not None:
            nodes.append(node)
    seen: set[str] = set()
    for n in nodes:
        if n["name"] in seen:
            problems.append(f"nodes: duplicate node name {n['name']!r}")
        seen.add(n["name"])
    hubs = [n["name"] for n in nodes if n["role"] == "hub"]
    if len(hubs) > 1:
        problems.append(f"nodes: more than one hub ({', '.join(hubs)})")
    if problems:
        raise InventoryError("\n".join(f"{path}: {p}" for p in problems))
    return sorted(nodes, key=lambda n: n["role"] != "hub")  # stable: the hub first, then file order


def select(nodes: list[dict[str, str]], names: list[str], role: str | None, profile: str | None) -> list[dict[str, str]]:
    """The target nodes: those named (all when none), filtered by role/profile; unknown names are errors."""
    known = {n["name"]: n for n in nodes}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InventoryError(f"unknown node(s): {', '.join(unknown)} (the inventory has: {', '.join(known)})")

    def fits(n: dict[str, str]) -> bool:
        return (role is None or n["role"] == role) and (profile is None or n["profile"] == profile)

    misfits = [f"{n} (role {known[n]['role']}, profile {known[n]['profile']})" for n in names if not fits(known[n])]
    if misfits:
        wanted = " and ".join(x for x in (f"role {role}" if role else "", f"profile {profile}" if profile else "") if x)
        raise InventoryError(f"not a target of this script, which updates nodes with {wanted} only: {', '.join(misfits)}")
    return [n for n in nodes if (not names or n["name"] in names) and fits(n)]


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fields")
    s = sub.add_parser("select")
    s.add_argument("inventory", type=Path)
    s.add_argument("--node", action="append", default=[])
    s.add_argument("--role", choices=ROLES)
    s.add_argument("--profile", choices=PROFILES)
    args = p.parse_args(argv)
    if args.cmd == "fields":
        print(" ".join(FIELDS))
        return 0
    try:
        targets = select(load(args.inventory), args.node, args.role, args.profile)
    except InventoryError as exc:
        print(exc, file=sys.stderr)
        return 2
    for n in targets:
        print(SEP.join(n[f] for f in FIELDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
