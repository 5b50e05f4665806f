"""Imports point down: hal <- plugins, nameserver <- actors <- web, and only the CLI builds the web server.

Walks every module's syntax tree (imports inside functions count too: a lazy import still
ties the layers together) and fails naming each import that points up."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hal", "plugins", "nameserver", "actors", "web")
# package -> the packages of ours it may import (besides itself)
ALLOWED = {
    "hal": set(),
    "plugins": {"hal"},
    "nameserver": {"hal"},
    "actors": {"hal", "plugins", "nameserver"},
    "web": {"hal", "plugins", "nameserver", "actors"},
}
# Inside actors/: the spoke's and the devices' modules never reach the hub's (a Pi Zero pays for each).
HUB_FREE = ("actors.spoke", "actors.devices", "actors.node")
# The one module that builds the web server (and so the one place actors/ may import web/).
COMPOSITION_ROOT = "actors.cli.compose"


def modules() -> list[tuple[str, Path]]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "build" in path.relative_to(ROOT).parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out.append((".".join(parts), path))
    return out


def imported(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def upward_imports() -> list[str]:
    problems = []
    for module, path in modules():
        pkg = module.split(".")[0]
        for line, name in imported(path, module):
            top = name.split(".")[0]
            where = f"{module} (line {line}) imports {name}"
            composing = module == COMPOSITION_ROOT and top == "web"
            if top in PACKAGES and top != pkg and top not in ALLOWED[pkg] and not composing:
                problems.append(where)
            if pkg == "actors" and _within(name, "actors.cli") and not _within(module, "actors.cli"):
                problems.append(where + " (only the CLI may import the CLI)")
            if pkg == "web" and _within(name, "actors.cli"):
                problems.append(where + " (the web layer is built by the CLI, never the other way)")
            if any(_within(module, p) for p in HUB_FREE) and _within(name, "actors.hub") \
                    and module != "actors.node.role":
                problems.append(where + " (spoke-side code must not import the hub's modules)")
            if top == "web" and pkg != "web" and module != COMPOSITION_ROOT:
                problems.append(where + " (only actors.cli.compose builds the web server)")
    return problems


def test_layers_imports_point_down():
    assert upward_imports() == []


def test_layers_every_package_is_walked():
    """The walk above sees every layer and their imports, so an empty list means something."""
    names = {m for m, _ in modules()}
    assert {"hal.readings", "plugins.host", "nameserver.registry", "actors.node.agent", "web.app",
            "actors.cli.compose"} <= names
    web_app = dict(modules())["web.app"]
    assert any(name.startswith("actors") for _, name in imported(web_app, "web.app"))


@pytest.mark.parametrize("source, module, expected", [
    ("from actors.hub.state import Hub\n", "actors.spoke.role", "spoke-side"),
    ("from web.server import WebServer\n", "actors.node.agent", "only actors.cli.compose"),
    ("import actors.client\n", "nameserver.server", "imports actors.client"),
    ("def f():\n    from plugins.host import PluginHost\n", "hal.sensor", "imports plugins.host"),
])
def test_layers_an_upward_import_is_caught(tmp_path, monkeypatch, source, module, expected):
    path = tmp_path / "probe.py"
    path.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "modules", lambda: [(module, path)])
    assert any(expected in p for p in upward_imports())
