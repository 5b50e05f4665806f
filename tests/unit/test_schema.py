"""hal.schema: the one table-driven validator behind node configs, jobs, plugin manifests and the inventory."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from hal.schema import (
    ANY,
    NUMBER,
    REQUIRED,
    Field,
    Problems,
    accepts,
    all_of,
    between,
    key_path,
    matches,
    node_name,
    one_of,
    rule,
    type_name,
)

PORT = {"host": Field(str, REQUIRED), "port": Field(int, 22, between(1, 65535))}


def test_schema_takes_defaults_and_given_values():
    p = Problems()
    assert p.table("ssh", {"host": "pi4"}, PORT) == {"host": "pi4", "port": 22}
    assert p.table("ssh", {"host": "pi4", "port": 2222}, PORT) == {"host": "pi4", "port": 2222}
    assert not p and list(p) == []


def test_schema_refuses_bool_where_an_int_is_expected():
    p = Problems()
    values = p.table("ssh", {"host": "pi4", "port": True}, PORT)
    assert values["port"] is None
    assert p.items == [("ssh.port", "must be integer, got bool True")]


def test_schema_accepts_bool_only_where_bool_or_anything_is_expected():
    assert accepts(bool, True) and accepts(ANY, False) and accepts((bool, int), True)
    assert not accepts(int, True) and not accepts(NUMBER, False) and not accepts(float, True)
    assert accepts(NUMBER, 1) and accepts(NUMBER, 1.5) and not accepts(NUMBER, "1")


def test_schema_unknown_keys_are_named_with_the_known_ones():
    p = Problems()
    p.table("ssh", {"host": "pi4", "prot": 22}, PORT)
    assert p.items == [("ssh.prot", "unknown key (known: host, port)")]


def test_schema_unknown_keys_can_be_left_to_the_caller():
    p = Problems()
    assert p.table("ssh", {"host": "pi4", "extra": 1}, PORT, unknown=False)["host"] == "pi4"
    assert not p
    p.unknown_keys("", {"extra": 1}, ["host"])
    assert p.items == [("extra", "unknown key (known: host)")]


def test_schema_missing_required_key_with_its_own_wording():
    p = Problems()
    fields = {"user": Field(str, REQUIRED, missing="missing (required, here or in [defaults])"), **PORT}
    assert p.table("nodes[0]", {}, fields) == {"user": None, "host": None, "port": 22}
    assert p.items == [("nodes[0].user", "missing (required, here or in [defaults])"),
                       ("nodes[0].host", "missing (required)")]


def test_schema_reports_unknown_keys_first_then_each_field_in_order():
    p = Problems()
    p.table("t", {"z": 1, "b": "x", "c": 99}, {"a": Field(str), "b": Field(int), "c": Field(int, 0, between(0, 9))})
    assert [where for where, _ in p] == ["t.z", "t.a", "t.b", "t.c"]
    assert p.items[-1] == ("t.c", "must be between 0 and 9, got 99")


def test_schema_not_a_table_gives_every_field_as_none():
    p = Problems()
    assert p.table("agent", [1], PORT) == {"host": None, "port": None}
    assert p.items == [("agent", "must be a table, got list")]


def test_schema_type_errors_name_expected_and_got():
    p = Problems()
    p.value("push.interval", "fast", Field(NUMBER, 5.0))
    p.value("leds", 5, Field(list, [], expect="a list of LED indexes"))
    assert p.items == [("push.interval", "must be int or number, got str 'fast'"),
                       ("leds", "must be a list of LED indexes, got 5")]
    assert (type_name(str), type_name(int), type_name(bool), type_name(list)) == ("string", "integer", "boolean", "list")


def test_schema_type_wording_is_the_callers_choice():
    p = Problems(type_message=lambda types, value: f"must be {types.__name__}, got {value!r}")
    p.value("nodes[1].port", "22", Field(int, 22))
    assert p.items == [("nodes[1].port", "must be int, got '22'")]


def test_schema_a_value_equal_to_its_default_passes_even_off_type():
    p = Problems()
    sudo = Field(bool, "auto")  # a sentinel default beside true/false
    assert p.value("sudo", "auto", sudo) == "auto" and p.value("sudo", True, sudo) is True
    assert p.value("seed", True, Field(int, 1)) is None  # equal to 1, but a bool: not the default
    assert p.items == [("seed", "must be integer, got bool True")]


def test_schema_check_runs_after_the_type_and_reports_its_message():
    p = Problems()
    assert p.value("role", "boss", Field(str, REQUIRED, one_of(("hub", "spoke")))) is None
    assert p.items == [("role", "must be one of hub, spoke, got 'boss'")]


def test_schema_problems_can_share_the_callers_list():
    items: list[tuple[str, str]] = [("node.name", "earlier")]
    p = Problems(items)
    p.add("jobs", "must be an array of tables ([[jobs]])")
    assert items == [("node.name", "earlier"), ("jobs", "must be an array of tables ([[jobs]])")] and len(p) == 2


def test_schema_reusable_checks():
    assert one_of(["r", "rw"])("rw") is None and one_of(["r", "rw"])("w") == "must be one of r, rw, got 'w'"
    assert between(0.1, 3600)(0.1) is None and between(0.1, 3600)(3600) is None
    assert between(0.1, 3600)(-1) == "must be between 0.1 and 3600, got -1"
    assert between(1, 10, "an integer 1..10")(0) == "must be an integer 1..10, got 0"
    assert matches(r"^[a-z]+$", "[a-z]+")("abc") is None
    assert matches(r"^[a-z]+$", "[a-z]+")("A") == "must match [a-z]+, got 'A'"
    assert rule(lambda v: v.startswith("/"), "an absolute path")("etc") == "must be an absolute path, got 'etc'"
    assert node_name("pi4") is None and node_name("Pi 4") == "must match [a-z0-9_-]{1,32}, got 'Pi 4'"


def test_schema_all_of_reports_the_first_problem():
    check = all_of(rule(lambda v: " " not in v, "without spaces"), node_name)
    assert check("pi4") is None
    assert check("a b") == "must be without spaces, got 'a b'"
    assert check("A") == "must match [a-z0-9_-]{1,32}, got 'A'"


def test_schema_absent_means_none_and_takes_the_default():
    p = Problems()
    assert p.value("hub.name", None, Field(str, None, node_name)) is None
    assert p.value("web.port", None, Field(int, 8080)) == 8080
    assert not p
    assert repr(REQUIRED) == "REQUIRED"


def test_schema_dotted_keys():
    assert key_path("", "plugin") == "plugin" and key_path("plugin", "name") == "plugin.name"
    p = Problems()
    p.table("", {"extra": {}}, {"plugin": Field(dict, {})})
    assert p.items == [("extra", "unknown key (known: plugin)")]


def test_schema_is_standard_library_and_hal_only():
    # deploy/inventory.py imports it from a bare checkout, with no packages installed
    tree = ast.parse((Path(__file__).resolve().parents[2] / "hal" / "schema.py").read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    ours = {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names}
    assert ours <= {"hal.names"}, ours


@pytest.mark.parametrize("value", [1, 1.0, 0])
def test_schema_number_range_is_inclusive(value):
    assert between(0, 1)(value) is None
