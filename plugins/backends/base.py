"""What every plugin backend provides: load a plugin into an instance, call it, restart it."""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from plugins.errors import PluginLoadError
from plugins.hostapi import HostApi, clip
from plugins.manifest import Manifest

KINDS = ("py", "wasm")
EMPTY_REQUEST = '{"readings":[],"dry_run":true}'
# A plugin's own error text as the node keeps it (status, results, log lines). The SDK
# already writes it on one line and bounded, but inside the sandbox the SDK is the plugin's
# to patch, and a .wasm component answers with any string: the host enforces it again.
MAX_ERROR_CHARS = 1000


def plugin_error_text(text: str) -> str:
    """A plugin's error message on one line (control characters escaped), at most MAX_ERROR_CHARS."""
    text = text[:MAX_ERROR_CHARS + 1]  # one past the limit: clip() still sees it was longer
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return clip(text, MAX_ERROR_CHARS)


@dataclass(frozen=True)
class PluginSource:
    """One version of a plugin as found on disk: its code and its manifest."""

    name: str
    kind: str  # "py" (a plain Python file) or "wasm" (a component implementing the world)
    path: Path
    manifest: Manifest
    text: str  # the Python source; "" for a .wasm component
    fingerprint: str

    @classmethod
    def read(cls, path: Path, manifest: Manifest, manifest_bytes: bytes) -> PluginSource:
        """Read a plugin file; the fingerprint covers the file and its manifest."""
        data = path.read_bytes()
        kind = path.suffix.lstrip(".")
        text = data.decode("utf-8") if kind == "py" else ""
        return cls(path.stem, kind, path, manifest, text, fingerprint(data + b"\0manifest\0" + manifest_bytes))


def fingerprint(data: bytes) -> str:
    """Tells one version of a plugin from the next: two checksums and the length.

    Not hashlib: importing it has OpenSSL list every digest it provides, which made up
    0.7 MB of a native node's RSS, and nothing here needs a cryptographic hash (the
    files are the node's own; the WASM backend hashes its artifacts with sha256)."""
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}-{len(data):x}"


class PluginInstance(ABC):
    """One loaded version of one plugin. Calls on an instance are serialized by the caller."""

    def __init__(self, source: PluginSource, api: HostApi) -> None:
        self.source = source
        self.api = api

    @property
    @abstractmethod
    def alive(self) -> bool:
        """False after a trap or timeout, until `restart()`."""

    @abstractmethod
    def call(self, method: str, arg: str | None = None) -> str:
        """Call "evaluate" (with readings JSON) or "poll"; returns the plugin's JSON text.

        Raises PluginCallError (the plugin failed; the instance is fine), PluginTrap or
        PluginTimeout (the instance is dead until restart()). Never anything else.
        """

    def restart(self) -> None:
        """Throw the dead runtime away and load the plugin again (effects of load are dropped)."""
        self.api.begin("load", dry_run=True)
        try:
            self._boot()
        finally:
            self.api.end(commit=False)

    @abstractmethod
    def _boot(self) -> None:
        """Build a fresh runtime and run the plugin's load(); raise PluginLoadError/PluginTrap."""

    @abstractmethod
    def close(self) -> None:
        """Release the runtime."""


class Backend(ABC):
    """Creates plugin instances of one kind of runtime."""

    name = "base"

    def load(self, source: PluginSource, api: HostApi) -> PluginInstance:
        """Create and boot an instance of `source` (a failure raises PluginLoadError or PluginTrap)."""
        if source.kind not in KINDS:
            raise PluginLoadError(f"unknown plugin kind {source.kind!r}")
        instance = self._create(source, api)
        instance.restart()
        return instance

    @abstractmethod
    def _create(self, source: PluginSource, api: HostApi) -> PluginInstance:
        """An instance that has not booted yet."""
