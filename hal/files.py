"""Files people hand us and files we keep: bounded reads of user input, and atomic writes (a crash or
power loss leaves the old file or the new one, never half of one)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any


def write_atomic(path: Path | str, data: bytes, mode: int | None = None) -> None:
    """Replace path with data atomically and durably; mode None keeps the temp file's owner-only 0600.

    The data goes to a temp file in the same directory (a rename is atomic only within one
    file system), is fsynced, renamed over path, and the directory is fsynced so the rename
    itself survives power loss. On any failure the temp file is removed and the error raised.
    The parent directory is created when missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent, f".{path.name}.", ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)  # before the first byte: a secret is never readable by others
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json_atomic(path: Path | str, obj: Any, mode: int | None = None, **dumps: Any) -> None:
    """write_atomic of obj as UTF-8 JSON; dumps are json.dumps options (indent, sort_keys, ...)."""
    write_atomic(path, json.dumps(obj, **dumps).encode("utf-8"), mode)


def _create_temp(directory: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """A new file under a name nobody else has, mode 0600, opened for writing: what
    tempfile.mkstemp() does, without importing tempfile, which loads shutil, bz2 and lzma
    (0.7 MB of RSS on a node that writes files atomically and never archives anything)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        name = os.path.join(os.path.abspath(directory), f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(directory))


def _fsync_dir(directory: Path) -> None:
    """Best effort: some file systems and platforms cannot open or fsync a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # the file itself is written and renamed; only the rename's durability is unconfirmed
    finally:
        os.close(fd)


class InputFileError(ValueError):
    """A file given as input cannot be used: too large, not UTF-8 text, or unreadable."""


def read_text_limited(path: Path | str, limit: int) -> str:
    """The UTF-8 text of a file given as input, refusing one larger than `limit` bytes.

    Reads at most limit + 1 bytes, so /dev/zero or a huge file costs nothing; says what is wrong
    in words (InputFileError, or FileNotFoundError for a missing file)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputFileError(f"{path} is larger than {limit // 1024} KiB; is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path} is not UTF-8 text (byte {exc.start}: binary, or UTF-16?)") from None
