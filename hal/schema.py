"""Table-driven validation for the documents the fleet reads: node configs, jobs, plugin manifests, the inventory.

A table is declared as key -> Field (accepted types, a default or REQUIRED, an optional check). A
Problems collector checks a document against such tables and records every problem as
(where, message) with a dotted key, so each caller reports them all at once in its own format.

Standard library only (besides hal.names): deploy/inventory.py imports it from a bare checkout with
no packages installed, and every layer may import it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from hal.names import node_name_problem

Types = type | tuple[type, ...]
Check = Callable[[Any], str | None]  # None when the value is fine, else what is wrong with it


class _Required:
    """The default of a key that must be given."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()
NUMBER: Final = (int, float)
ANY: Final = object  # as a field's types: anything goes (a later, richer check judges it)


@dataclass(frozen=True)
class Field:
    """One key of a table: the types it accepts, its default (or REQUIRED) and an optional check."""

    types: Types
    default: Any = REQUIRED
    check: Check | None = None
    # A type error then reads `must be <expect>, got <value>`: the table's words where a type name says less.
    expect: str | None = None
    missing: str = "missing (required)"


Fields = Mapping[str, Field]


def type_name(types: Types) -> str:
    """A type as problems name it: `integer`, `string`, `boolean`, or `int or number` for NUMBER."""
    if isinstance(types, tuple):
        return " or ".join("number" if t is float else t.__name__ for t in types)
    return {"str": "string", "int": "integer", "bool": "boolean"}.get(types.__name__, types.__name__)


def type_problem(types: Types, value: Any) -> str:
    """The usual wording of a type error: `must be integer, got bool True`."""
    return f"must be {type_name(types)}, got {type(value).__name__} {value!r}"


def accepts(types: Types, value: Any) -> bool:
    """isinstance, except that a bool is no number: `port = true` is a mistake, not port 1."""
    options = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in options and object not in options:
        return False
    return isinstance(value, options)


def key_path(where: str, key: str) -> str:
    """`where.key`, or just `key` at the top of a document (where = "")."""
    return f"{where}.{key}" if where else key


class Problems:
    """Collects (where, message) problems, so a document's every problem is reported at once."""

    def __init__(self, items: list[tuple[str, str]] | None = None,
                 type_message: Callable[[Types, Any], str] = type_problem) -> None:
        # Taking the caller's list lets a part of a document (the jobs of a config) add to its whole.
        self.items: list[tuple[str, str]] = [] if items is None else items
        self.type_message = type_message

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def add(self, where: str, message: str) -> None:
        """Record one problem at a dotted key ("" = the document as a whole)."""
        self.items.append((where, message))

    def table(self, where: str, data: Any, fields: Fields, *, unknown: bool = True) -> dict[str, Any]:
        """Check unknown keys, then each field; returns every field's value (None where it is wrong)."""
        if not isinstance(data, dict):
            self.add(where, f"must be a table, got {type(data).__name__}")
            return dict.fromkeys(fields)
        if unknown:
            self.unknown_keys(where, data, fields)
        return {key: self.value(key_path(where, key), data.get(key), field) for key, field in fields.items()}

    def unknown_keys(self, where: str, data: Mapping[str, Any], known: Iterable[str]) -> None:
        """Record each key of `data` not in `known`, naming the known ones (a typo is then easy to see)."""
        names = list(known)
        for key in data:
            if key not in names:
                self.add(key_path(where, key), f"unknown key (known: {', '.join(names)})")

    def value(self, where: str, value: Any, field: Field) -> Any:
        """Check one value (None = absent): missing, then type, then the field's check."""
        if value is None:  # TOML has no null, so None only ever means "not given"
            if field.default is REQUIRED:
                self.add(where, field.missing)
            return None if field.default is REQUIRED else field.default
        # A default need not be of the field's type (sudo = "auto" beside true/false), so a value equal
        # to it passes as the default would; "of the same type" keeps `true` from passing for a 1.
        if type(value) is type(field.default) and value == field.default:
            return value
        if not accepts(field.types, value):
            self.add(where, f"must be {field.expect}, got {value!r}" if field.expect
                     else self.type_message(field.types, value))
            return None
        if field.check is not None and (message := field.check(value)):
            self.add(where, message)
            return None
        return value


def one_of(options: Iterable[str]) -> Check:
    """A check: the value is one of `options`."""
    choices = tuple(options)

    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}, got {value!r}"
    return check


def between(low: float, high: float, expect: str | None = None) -> Check:
    """A check: low <= value <= high; `expect` words the problem as `must be <expect>, got <value>`."""
    wanted = expect or f"between {low} and {high}"

    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be {wanted}, got {value!r}"
    return check


def matches(pattern: str | re.Pattern[str], rule: str) -> Check:
    """A check: the pattern matches at the start of the value (anchor it); `rule` shows it to people."""
    regex = re.compile(pattern)

    def check(value: Any) -> str | None:
        return None if regex.match(value) else f"must match {rule}, got {value!r}"
    return check


def rule(test: Callable[[Any], Any], expect: str) -> Check:
    """A check from a predicate: `must be <expect>, got <value>` where the test fails."""
    def check(value: Any) -> str | None:
        return None if test(value) else f"must be {expect}, got {value!r}"
    return check


def all_of(*checks: Check) -> Check:
    """A check passing where every one of `checks` passes; the first problem found is reported."""
    def check(value: Any) -> str | None:
        for one in checks:
            if message := one(value):
                return message
        return None
    return check


def node_name(value: Any) -> str | None:
    """A check: the value is a node name (the one rule in hal.names)."""
    return node_name_problem(value)
