"""The shipped plugin sandbox: export where the release is made, install and precompile on the
board, and the runtime's lookup and compiled-code cache (tiny components; no componentize-py run)."""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from plugins.errors import SandboxUnavailable
from plugins.sandbox import build, install

wasmtime = pytest.importorskip("wasmtime")

from plugins.backends import wasm  # noqa: E402  (after the skip: it is the wasmtime path)


def tiny_component(path: Path) -> Path:
    """A small valid component, different every time (so no cache anywhere knows it)."""
    path.write_bytes(wasmtime.wat2wasm(f'(component (core module (func (export "f{uuid.uuid4().hex}"))))'))
    return path


def export(tmp_path: Path) -> Path:
    """What the release bundle carries: sandbox.wasm and sandbox.json."""
    out = tmp_path / "bundle"
    build.export(tiny_component(tmp_path / "built.wasm"), out)
    return out


@pytest.fixture
def runtime() -> Any:
    """A runtime of its own: the process-wide one remembers components in memory."""
    return wasm.WasmRuntime()


def no_compile(*_: Any) -> Any:
    raise AssertionError("compiled although a valid artifact was there")


def test_the_sources_key_ignores_componentize_py_the_build_key_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """A board has no componentize-py, yet must tell whether a shipped component fits its guest sources."""
    sources, key = build.sources_key(), build.build_key()
    monkeypatch.setattr(build, "componentize_py_version", lambda: None)
    assert build.sources_key() == sources and build.build_key() != key
    assert build.sources_key(build.PLUGINS_DIR) == sources  # the --sources form, on this package's own tree


def test_export_writes_the_component_with_its_hash_and_sources(tmp_path: Path) -> None:
    out = export(tmp_path)
    manifest = json.loads((out / "sandbox.json").read_text())
    assert manifest["sha256"] == build.file_sha256(out / "sandbox.wasm")
    assert manifest["sources"] == build.sources_key() and manifest["size"] == (out / "sandbox.wasm").stat().st_size


def test_install_copies_and_precompiles_then_is_a_no_op(tmp_path: Path) -> None:
    src = export(tmp_path)
    dest = tmp_path / "release" / "share" / "harvester" / "sandbox"
    first = install.install(src, dest)
    assert "installed" in first and "precompiled for this CPU" in first, first
    artifacts = sorted((dest / "compiled").glob("*.cwasm"))
    assert len(artifacts) == 1 and (dest / "compiled" / f"{artifacts[0].name}.sha256").is_file()
    assert (dest / "sandbox.wasm").read_bytes() == (src / "sandbox.wasm").read_bytes()
    again = install.install(src, dest)
    assert "present" in again and "precompiled machine code is current" in again, again


def test_a_new_release_shares_the_machine_code_of_the_same_component(tmp_path: Path) -> None:
    src = export(tmp_path)
    releases = tmp_path / "releases"
    old, new = (releases / v / "share" / "harvester" / "sandbox" for v in ("0.1+h1", "0.1+h2"))
    install.install(src, old, releases)
    line = install.install(src, new, releases)
    assert "machine code shared with release 0.1+h1" in line, line
    (a,), (b,) = (sorted((d / "compiled").glob("*.cwasm")) for d in (old, new))
    assert a.stat().st_ino == b.stat().st_ino  # a hard link: one copy on the SD card


def test_install_refuses_a_damaged_component(tmp_path: Path) -> None:
    src = export(tmp_path)
    data = bytearray((src / "sandbox.wasm").read_bytes())
    data[-1] ^= 0xFF
    (src / "sandbox.wasm").write_bytes(bytes(data))
    with pytest.raises(SandboxUnavailable, match=r"its manifest says .* the copy is damaged; ship it again"):
        install.install(src, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_install_refuses_a_component_built_from_other_guest_sources(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    src = export(tmp_path)
    manifest = json.loads((src / "sandbox.json").read_text())
    (src / "sandbox.json").write_text(json.dumps({**manifest, "sources": "0123456789abcdef"}))
    assert install.main([str(src), "--dest", str(tmp_path / "dest")]) == 1
    err = capsys.readouterr().err
    assert "built from other guest sources (0123456789abcdef) than this release's" in err
    assert "Traceback" not in err


def test_the_backend_runs_the_shipped_component_from_its_precompiled_code(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "sandbox"
    install.install(export(tmp_path), dest)
    monkeypatch.setenv(install.ENV_INSTALL_DIR, str(dest))
    monkeypatch.delenv(wasm.ENV_CACHE, raising=False)
    monkeypatch.setattr(build, "can_build", lambda: False)  # as on a board
    backend = wasm.WasmBackend()
    assert backend.sandbox_path() == dest / "sandbox.wasm" and backend.cache_dir == dest / "compiled"
    monkeypatch.setattr(wasm.WasmRuntime, "_compile", no_compile)
    assert backend.runtime.component(backend.sandbox_path(), backend.cache_dir) is not None


def test_without_a_shipped_component_or_componentize_py_the_error_says_how_to_get_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(install.ENV_INSTALL_DIR, str(tmp_path / "nothing-here"))
    monkeypatch.setattr(build, "can_build", lambda: False)
    with pytest.raises(SandboxUnavailable) as err:
        wasm.WasmBackend().sandbox_path()
    assert "update-host.sh" in str(err.value) and "wasm-build" in str(err.value)


def test_a_shipped_component_of_other_sources_is_refused_on_a_board(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "sandbox"
    install.install(export(tmp_path), dest)
    manifest = json.loads((dest / "sandbox.json").read_text())
    (dest / "sandbox.json").write_text(json.dumps({**manifest, "sources": "0123456789abcdef"}))
    monkeypatch.setenv(install.ENV_INSTALL_DIR, str(dest))
    monkeypatch.setattr(build, "can_build", lambda: False)
    with pytest.raises(SandboxUnavailable, match="other guest sources"):
        wasm.WasmBackend().sandbox_path()


def test_a_shipped_component_of_other_sources_is_rebuilt_where_componentize_py_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    dest = tmp_path / "sandbox"
    install.install(export(tmp_path), dest)
    (dest / "sandbox.wasm").write_bytes(b"\0asm damaged")
    monkeypatch.setenv(install.ENV_INSTALL_DIR, str(dest))
    monkeypatch.setattr(build, "can_build", lambda: True)
    monkeypatch.setattr(build, "ensure_built", lambda: tmp_path / "built-here.wasm")
    with caplog.at_level(logging.WARNING):
        assert wasm.WasmBackend().sandbox_path() == tmp_path / "built-here.wasm"
    assert "the copy is damaged" in caplog.text and "building one here instead" in caplog.text


# -- the compiled-code cache -----------------------------------------------------------------------
def cached(runtime: Any, component: Path, cache: Path) -> Path:
    """Compile `component` into `cache` through a throwaway runtime; returns the artifact."""
    artifact, compiled = runtime.precompile(component, cache)
    assert compiled
    return artifact


def test_a_corrupt_artifact_is_compiled_again_not_loaded(tmp_path: Path, runtime: Any,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """wasmtime maps damaged machine code as it is; the checksum beside it catches the damage."""
    component = tiny_component(tmp_path / "c.wasm")
    artifact = cached(wasm.WasmRuntime(), component, tmp_path / "cache")
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit: same size, a valid ELF still
    artifact.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        again, compiled = runtime.precompile(component, tmp_path / "cache")
    assert compiled and again == artifact and "does not match its checksum" in caplog.text
    assert wasm.artifact_digest(artifact) == wasm._read_checksum(artifact)


@pytest.mark.parametrize("damage", ["truncated", "no checksum", "other engine"])
def test_an_unusable_artifact_is_compiled_again(tmp_path: Path, runtime: Any, damage: str) -> None:
    component = tiny_component(tmp_path / "c.wasm")
    artifact = cached(wasm.WasmRuntime(), component, tmp_path / "cache")
    if damage == "truncated":
        wasm.save_artifact(artifact, artifact.read_bytes()[:200])  # checksum matches: wasmtime refuses it
    elif damage == "no checksum":
        (tmp_path / "cache" / f"{artifact.name}.sha256").unlink()
    else:  # what another wasmtime or CPU amounts to: an artifact this engine refuses on load
        other = wasmtime.component.Component.from_file(wasmtime.Engine(wasmtime.Config()), str(component))
        wasm.save_artifact(artifact, other.serialize())
    _, compiled = runtime.precompile(component, tmp_path / "cache")
    assert compiled
    runtime2 = wasm.WasmRuntime()
    runtime2._compile = no_compile  # and now it loads
    assert runtime2.component(component, tmp_path / "cache") is not None


def test_a_read_only_cache_compiles_into_memory_instead_of_failing(tmp_path: Path, runtime: Any,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A release's compiled/ is read-only to the service: an artifact it cannot use is not fatal."""
    component = tiny_component(tmp_path / "c.wasm")

    def read_only(*_: Any) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(wasm, "save_artifact", read_only)
    with caplog.at_level(logging.WARNING):
        assert runtime.component(component, tmp_path / "cache") is not None
    assert "cannot cache it" in caplog.text and "keeps it in memory" in caplog.text


def test_pruning_drops_checksums_with_their_artifacts(tmp_path: Path) -> None:
    for i, name in enumerate(("old", "new")):
        wasm.save_artifact(tmp_path / f"{name}.cwasm", b"x" * 100)
        os.utime(tmp_path / f"{name}.cwasm", (1000 + i, 1000 + i))
    wasm._prune(tmp_path, keep=tmp_path / "new.cwasm", budget=150)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.cwasm", "new.cwasm.sha256"]


def test_a_node_without_a_sandbox_says_so_in_each_plugins_status(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from plugins.host import PluginHost, seed_bundled

    monkeypatch.setenv(install.ENV_INSTALL_DIR, str(tmp_path / "nothing-here"))
    monkeypatch.setattr(build, "can_build", lambda: False)
    seed_bundled(tmp_path / "plugins")
    host = PluginHost("pi4", tmp_path / "plugins", "wasm")
    failed = host.scan()["failed"]
    assert set(failed) == {"air_quality", "cpu_temperature", "room_temperature"}
    status = host.status("room_temperature")
    assert status["state"] == "error" and "the release bundle ships one" in status["load_error"]
    assert "Traceback" not in status["load_error"]
