"""Pure helpers of the WASM path: the compiled-code cache pruning and result validation (no wasmtime needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plugins.backends.wasm import _prune
from plugins.errors import PluginResultError
from plugins.results import parse_result


def test_compiled_cache_prunes_least_recently_used_artifacts(tmp_path: Path) -> None:
    for i, name in enumerate(["old", "mid", "new"]):
        f = tmp_path / f"{name}.cwasm"
        f.write_bytes(b"x" * 100)
        os.utime(f, (1000 + i, 1000 + i))
    _prune(tmp_path, keep=tmp_path / "old.cwasm", budget=150)
    assert sorted(p.stem for p in tmp_path.glob("*.cwasm")) == ["old"]


def test_results_are_bounded_in_size_depth_and_type() -> None:
    assert parse_result('{"a": {"b": [1, {"c": null}]}}') == {"a": {"b": [1, {"c": None}]}}
    assert parse_result("null") is None
    nested = '{"a":' * 8 + "1" + "}" * 8
    assert parse_result(nested) is not None
    for text, message in [('{"a":' * 9 + "1" + "}" * 9, "deeper than 8"), ("[1]", "JSON object or null"),
                          ('{"x": NaN}', "not valid JSON"), ("{" + " " * 20000 + "}", "limit is 16384"),
                          (b"{}", "must be JSON text")]:
        with pytest.raises(PluginResultError, match=message):
            parse_result(text)
