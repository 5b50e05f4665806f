"""Atomic file writes: a crash or power loss leaves the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
