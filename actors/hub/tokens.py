"""HTTP bearer tokens: one operator token and one token per node, in a 0600 JSON file."""

from __future__ import annotations

import hmac
import json
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from hal.files import write_json_atomic
from hal.names import is_node_name


class TokenFileError(ValueError):
    """The tokens file is unreadable or malformed."""


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically with mode 0600 from the first byte (tokens are secrets)."""
    write_json_atomic(path, data, mode=0o600, indent=2)


class Tokens:
    """The hub's token file; re-read when it changes so new nodes need no restart."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._data: dict[str, Any] = {}
        if not self.path.exists():
            _write_private(self.path, {"operator": secrets.token_urlsafe(24), "nodes": {}})
        self._reload()

    def _reload(self) -> None:
        mtime = self.path.stat().st_mtime
        if mtime == self._mtime:
            return
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise TokenFileError(f"{self.path}: cannot read tokens: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("operator"), str) \
                or not isinstance(data.get("nodes", {}), dict):
            raise TokenFileError(f'{self.path}: expected {{"operator": "...", "nodes": {{"node": "..."}}}}')
        if self.path.stat().st_mode & 0o077:
            os.chmod(self.path, 0o600)  # tokens are secrets; tighten a file someone loosened
        self._data, self._mtime = data, mtime

    def data(self) -> dict[str, Any]:
        """The current tokens (operator, nodes)."""
        with self._lock:
            self._reload()
            return {"operator": self._data["operator"], "nodes": dict(self._data.get("nodes", {}))}

    def ensure_node(self, node: str) -> str:
        """Return node's token, creating one if needed."""
        if not is_node_name(node):
            raise ValueError(f"bad node name {node!r}")
        with self._lock:
            self._reload()
            nodes = self._data.setdefault("nodes", {})
            if node not in nodes:
                nodes[node] = secrets.token_urlsafe(24)
                _write_private(self.path, self._data)
                self._mtime = self.path.stat().st_mtime
            return nodes[node]

    def is_operator(self, token: str | None) -> bool:
        """Constant-time check of the operator token."""
        return bool(token) and hmac.compare_digest(token.encode(), self.data()["operator"].encode())

    def node_for(self, token: str | None) -> str | None:
        """The node a token belongs to, or None."""
        if not token:
            return None
        for node, expected in self.data()["nodes"].items():
            if hmac.compare_digest(token.encode(), str(expected).encode()):
                return node
        return None
