"""Every error the plugin layer raises; each also inherits the matching built-in."""

from __future__ import annotations


class PluginError(Exception):
    """Base of the plugin layer's errors."""


class ManifestError(PluginError, ValueError):
    """A plugin manifest that is missing, not TOML, or breaks the schema."""


class SandboxUnavailable(PluginError, RuntimeError):
    """The WebAssembly runtime or the sandbox component cannot be used on this node."""


class PluginLoadError(PluginError, RuntimeError):
    """The plugin file could not be loaded (syntax error, refused import, no evaluate())."""


class PluginCallError(PluginError, RuntimeError):
    """The plugin raised an error in a call (the sandbox itself is fine)."""


class PluginResultError(PluginCallError, ValueError):
    """The plugin returned something that is not a valid result."""


class PluginTrap(PluginError, RuntimeError):
    """The sandbox trapped: its store is discarded and rebuilt before the next call."""


class PluginTimeout(PluginTrap, TimeoutError):
    """The call ran past the manifest's time limit and was stopped."""


class PluginQuarantined(PluginError, RuntimeError):
    """The plugin trapped too often and is not run until its file changes."""


class UnknownPlugin(PluginError, LookupError):
    """No plugin of that name is loaded on this node."""


def error_kind(exc: BaseException) -> str:
    """Short name of an error's kind for status and results: timeout, trap, load, result, error."""
    if isinstance(exc, PluginTimeout):
        return "timeout"
    if isinstance(exc, PluginTrap):
        return "trap"
    if isinstance(exc, PluginQuarantined):
        return "quarantined"
    if isinstance(exc, PluginLoadError):
        return "load"
    if isinstance(exc, PluginResultError):
        return "result"
    return "error"
