"""A plugin's persistent key/value state: one small JSON file per plugin, written atomically.

State is what lets an alert rule survive a hot reload, a trap (the sandbox's memory is
thrown away) or a node restart without firing twice or forgetting a raised alert.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from hal.files import write_json_atomic

log = logging.getLogger(__name__)

MAX_KEYS = 64
MAX_KEY_CHARS = 128
MAX_VALUE_BYTES = 8 * 1024
MAX_TOTAL_BYTES = 64 * 1024


class StateLimit(ValueError):
    """A state write that breaks the per-plugin limits."""


def check_entry(key: str, value: str | None) -> None:
    """Raise StateLimit if one key/value pair is out of bounds."""
    if not key or len(key) > MAX_KEY_CHARS:
        raise StateLimit(f"state keys are 1..{MAX_KEY_CHARS} characters, got {len(key)}")
    if value is not None and len(value.encode()) > MAX_VALUE_BYTES:
        raise StateLimit(f"a state value is at most {MAX_VALUE_BYTES} bytes, got {len(value.encode())}")


class PluginState:
    """Committed state of one plugin; `path=None` keeps it in memory only (tests, `plugins test`)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._data: dict[str, str] = self._read()

    def _read(self) -> dict[str, str]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            # A corrupt state file must not keep the plugin from running: start empty, say so once.
            log.warning("plugin state %s unreadable (%s); starting with empty state", self.path, exc)
            return {}
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            log.warning("plugin state %s is not a string table; starting with empty state", self.path)
            return {}
        return data

    def get(self, key: str) -> str | None:
        """The committed value of a key."""
        with self._lock:
            return self._data.get(key)

    def snapshot(self) -> dict[str, str]:
        """A copy of every committed key."""
        with self._lock:
            return dict(self._data)

    def check(self, changes: dict[str, str | None]) -> None:
        """Raise StateLimit if applying `changes` would exceed the limits."""
        with self._lock:
            merged = {**self._data, **changes}
        merged = {k: v for k, v in merged.items() if v is not None}
        if len(merged) > MAX_KEYS:
            raise StateLimit(f"a plugin keeps at most {MAX_KEYS} state keys")
        total = sum(len(k) + len(v.encode()) for k, v in merged.items())
        if total > MAX_TOTAL_BYTES:
            raise StateLimit(f"a plugin keeps at most {MAX_TOTAL_BYTES} bytes of state, this would be {total}")

    def commit(self, changes: dict[str, str | None]) -> None:
        """Apply changes (None deletes) and write the file if anything changed."""
        if not changes:
            return
        with self._lock:
            before = dict(self._data)
            for key, value in changes.items():
                if value is None:
                    self._data.pop(key, None)
                else:
                    self._data[key] = value
            if self._data == before or self.path is None:
                return
            self._write(dict(self._data))

    def _write(self, data: dict[str, str]) -> None:
        assert self.path is not None
        write_json_atomic(self.path, data, separators=(",", ":"), sort_keys=True)
