"""Pure helpers of the WASM path: the compiled-code cache pruning and result validation (no wasmtime needed)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from plugins.backends.wasm import _prune
from plugins.errors import PluginResultError
from plugins.results import parse_result
from plugins.sandbox import build


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


def test_the_sandbox_build_key_covers_the_wit_world_and_every_guest_source(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An edit of the guest (the SDK, the app and its compile guard) or the world builds a new sandbox."""
    assert {p.name for p in build.guest_sources()} >= {"harvester.wit", "app.py", "harvester_plugin.py"}
    key = build.build_key()
    guest, wit = tmp_path / "guest", tmp_path / "harvester.wit"
    shutil.copytree(build.GUEST_DIR, guest, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(build.WIT_FILE, wit)
    monkeypatch.setattr(build, "GUEST_DIR", guest)
    monkeypatch.setattr(build, "WIT_FILE", wit)
    assert build.build_key() == key
    for source in (guest / "app.py", guest / "harvester_plugin.py", wit):
        original = source.read_bytes()
        source.write_bytes(original + b"\n# edited\n")
        assert build.build_key() != key, source.name
        source.write_bytes(original)
    assert build.build_key() == key
