#!/usr/bin/env python3
"""Read the fleet inventory (TOML) for the deploy scripts; standard library and this repository's hal only.

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

# The deploy scripts run this file from a checkout, where nothing is installed: the shared validator
# (standard library only) is imported from the repository root beside this folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hal.schema import NUMBER, REQUIRED, Field, Problems, Types, all_of, node_name, one_of, rule  # noqa: E402

SEP = "\x1f"
FIELDS = ("name", "host", "port", "user", "sudo", "role", "profile", "config", "plugins", "prefix", "etc",
          "service", "unit", "python", "extras", "system_site_packages", "run_as_root", "health_timeout",
          "wheelhouse", "pki")
ROLES, PROFILES, SERVICES = ("hub", "spoke"), ("wasm", "native"), ("systemd", "pidfile")
UNITS = {("hub", "wasm"): "harvester-hub.service", ("hub", "native"): "harvester-hub.service",
         ("spoke", "wasm"): "harvester-spoke.service", ("spoke", "native"): "harvester-native.service"}
# Values end up in ssh command lines and paths on the node: keep them to a shell-safe alphabet.
SAFE = re.compile(r"^[A-Za-z0-9._/@:+=,~-]+\Z")
STATE_DIR = "/var/lib/harvester"  # what the systemd units make writable


def _safe(value: str) -> str | None:
    if value and not SAFE.match(value):
        return f"{value!r} has characters the deploy scripts do not accept (letters, digits and ._/@:+=,~- only)"
    return None


def _type_message(types: Types, value: Any) -> str:
    return f"must be {getattr(types, '__name__', 'a number')}, got {value!r}"


_ABSOLUTE = all_of(_safe, rule(lambda v: v.startswith("/"), "an absolute path on the node"))
NODE_KEYS = {
    "name": Field(str, REQUIRED, all_of(_safe, node_name)),
    "host": Field(str, REQUIRED, _safe),
    "role": Field(str, REQUIRED, all_of(_safe, one_of(ROLES))),
    "profile": Field(str, REQUIRED, all_of(_safe, one_of(PROFILES))),
    "config": Field(str, REQUIRED, _safe),
    "user": Field(str, REQUIRED, _safe, missing="missing (required, here or in [defaults])"),
    "port": Field(int, 22, rule(lambda v: 0 < v < 65536, "1..65535")),
    "sudo": Field(bool, "auto"),  # auto: sudo unless the user is root
    "plugins": Field(str, "", _safe),
    "prefix": Field(str, "/opt/harvester", _ABSOLUTE),
    "etc": Field(str, "/etc/harvester", _ABSOLUTE),
    "service": Field(str, "systemd", all_of(_safe, one_of(SERVICES))),
    "unit": Field(str, "", _safe),
    "python": Field(str, "python3", _safe),
    "extras": Field(list, [], rule(lambda v: all(isinstance(e, str) and SAFE.match(e) for e in v),
                                   "a list of extra names")),
    "system_site_packages": Field(bool, False),
    "run_as_root": Field(bool, False),
    "health_timeout": Field(NUMBER, 90, rule(lambda v: 0 < v <= 3600, "1..3600 seconds")),
    "wheelhouse": Field(str, "", _safe),
    "pki": Field(str, "", _safe),
}
PER_NODE_ONLY = {"name", "host", "role", "profile", "config"}


class InventoryError(Exception):
    """Problems found in the inventory; one per line."""


def _check_node(p: Problems, raw: Any, defaults: dict[str, Any], where: str, base: Path) -> dict[str, str] | None:
    if isinstance(raw, dict):  # an unknown key is reported, but the row's other checks still run
        p.unknown_keys(where, raw, NODE_KEYS)
    before = len(p)
    node = p.table(where, {**defaults, **raw} if isinstance(raw, dict) else raw, NODE_KEYS, unknown=False)
    if len(p) > before:
        return None
    config = (base / node["config"]).resolve()
    plugins = (base / node["plugins"]).resolve() if node["plugins"] else None
    wheelhouse = (base / node["wheelhouse"]).resolve() if node["wheelhouse"] else None
    pki = (base / Path(node["pki"]).expanduser()).resolve() if node["pki"] else None
    if pki is not None:
        for rel in ("ca.crt", f"nodes/{node['name']}.crt", f"nodes/{node['name']}.key"):
            if not (pki / rel).is_file():
                p.add(f"{where}.pki", f"{pki / rel} not found (make it with `harvester certs init` "
                      "or `harvester certs add-node`)")
    if not config.is_file():
        p.add(f"{where}.config", f"file not found: {config}")
    else:
        _check_config(p, config, node, where)
    for key, path in (("plugins", plugins), ("wheelhouse", wheelhouse)):
        if path is not None and not path.is_dir():
            p.add(f"{where}.{key}", f"directory not found: {path}")
    sudo = node["sudo"] if isinstance(node["sudo"], bool) else node["user"] != "root"
    out = {k: str(v) for k, v in node.items()}
    out.update(config=str(config), plugins=str(plugins or ""), wheelhouse=str(wheelhouse or ""), pki=str(pki or ""),
               sudo="1" if sudo else "0", extras=",".join(node["extras"]),
               unit=node["unit"] or UNITS[(node["role"], node["profile"])],
               system_site_packages="1" if node["system_site_packages"] else "0",
               run_as_root="1" if node["run_as_root"] else "0", health_timeout=f"{node['health_timeout']:g}")
    return out


def _check_config(p: Problems, path: Path, node: dict[str, Any], where: str) -> None:
    """The node config must describe the same node; full validation is `harvester config check`."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        p.add(f"{where}.config", f"{path}: {exc}")
        return
    section = data.get("node", {}) if isinstance(data.get("node"), dict) else {}
    for key in ("name", "role", "profile"):
        have = section.get(key, "wasm" if key == "profile" else None)
        if have != node[key]:
            p.add(f"{where}.config", f"{path} says node.{key} = {have!r}, the inventory says {node[key]!r}")
    plugin_dir = (data.get("plugins") or {}).get("dir") if isinstance(data.get("plugins"), dict) else None
    if node["plugins"] and plugin_dir != f"{node['etc']}/plugins":
        p.add(f"{where}.config", f"{path} has plugins.dir = {plugin_dir!r}; the deploy scripts put "
              f"plugins in {node['etc']}/plugins, so set it to that")
    _check_tls(p, data, path, node, where)
    state_dir = section.get("state_dir", "")
    if node["service"] == "systemd" and not str(state_dir).startswith(STATE_DIR):
        print(f"warning: {where}: node.state_dir = {state_dir!r} is outside {STATE_DIR}, which is the only "
              "place the systemd units let the agent write", file=sys.stderr)


def _check_tls(p: Problems, data: dict[str, Any], path: Path, node: dict[str, Any], where: str) -> None:
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
        p.add(f"{where}.config", f"{path}: with `pki` the deploy scripts install the node's TLS files as "
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
    p = Problems(type_message=_type_message)
    for key in data:
        if key not in ("defaults", "nodes"):
            p.add(key, "unknown section (known: defaults, nodes)")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        p.add("defaults", f"must be a table, got {type(defaults).__name__}")
        defaults = {}
    for key in defaults:
        if key in PER_NODE_ONLY or key not in NODE_KEYS:
            p.add(f"defaults.{key}", "not allowed in [defaults]")
    shared = {k: v for k, v in defaults.items() if k not in PER_NODE_ONLY}
    rows = data.get("nodes", [])
    if not isinstance(rows, list) or not rows:
        p.add("nodes", "no [[nodes]] rows")
        rows = []
    nodes: list[dict[str, str]] = []
    for i, raw in enumerate(rows):
        node = _check_node(p, raw, shared, f"nodes[{i}]", path.resolve().parent)
        if node is not None:
            nodes.append(node)
    seen: set[str] = set()
    for n in nodes:
        if n["name"] in seen:
            p.add("nodes", f"duplicate node name {n['name']!r}")
        seen.add(n["name"])
    hubs = [n["name"] for n in nodes if n["role"] == "hub"]
    if len(hubs) > 1:
        p.add("nodes", f"more than one hub ({', '.join(hubs)})")
    if p:
        raise InventoryError("\n".join(f"{path}: {where}: {msg}" for where, msg in p))
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
