import json
import os
import stat
from pathlib import Path

import pytest

from hal.files import write_atomic, write_json_atomic


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_atomic_writes_the_bytes_and_creates_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.bin"
    write_atomic(path, b"\x00first")
    write_atomic(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.bin"]


def test_write_atomic_keeps_the_mode_the_caller_asks_for(tmp_path: Path) -> None:
    write_atomic(tmp_path / "secret", b"s", mode=0o600)
    write_atomic(tmp_path / "public", b"p", mode=0o644)
    write_atomic(tmp_path / "default", b"d")
    assert mode_of(tmp_path / "secret") == 0o600
    assert mode_of(tmp_path / "public") == 0o644
    assert mode_of(tmp_path / "default") == 0o600  # mkstemp's: never more open than asked
    (tmp_path / "secret").chmod(0o644)
    write_atomic(tmp_path / "secret", b"again", mode=0o600)  # a rewrite tightens a loosened file
    assert mode_of(tmp_path / "secret") == 0o600


def test_write_atomic_is_private_from_the_first_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    modes: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    write_atomic(tmp_path / "tokens.json", b"{}", mode=0o600)
    assert modes == [0o600]  # the temp file was fsynced (and was 0600) before the rename


def test_write_atomic_failure_keeps_the_old_file_and_leaves_no_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, b"old")

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_write_atomic_failure_while_writing_leaves_no_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        write_atomic(tmp_path / "state.json", b"new")
    assert list(tmp_path.iterdir()) == []


def test_write_json_atomic_passes_json_options(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    write_json_atomic(path, {"b": 1, "a": "é"}, sort_keys=True, separators=(",", ":"))
    assert path.read_text(encoding="utf-8") == '{"a":"\\u00e9","b":1}'
    write_json_atomic(path, [1, 2], mode=0o640, indent=2)
    assert json.loads(path.read_text()) == [1, 2] and "\n" in path.read_text() and mode_of(path) == 0o640
