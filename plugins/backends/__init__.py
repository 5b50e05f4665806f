"""Plugin backends: `wasm` (wasmtime sandbox) and `native` (in-process, trusted plugins only)."""

from __future__ import annotations

from typing import Any

from plugins.backends.base import Backend, PluginInstance, PluginSource

PROFILES = ("wasm", "native")

__all__ = ["PROFILES", "Backend", "PluginInstance", "PluginSource", "make_backend"]


def make_backend(profile: str, **options: Any) -> Backend:
    """The backend for a node profile; wasmtime is imported only for "wasm"."""
    if profile == "wasm":
        from plugins.backends.wasm import WasmBackend

        return WasmBackend(**options)
    if profile == "native":
        from plugins.backends.native import NativeBackend

        return NativeBackend()
    raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
