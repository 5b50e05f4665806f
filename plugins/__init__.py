"""Plugins: alert rules and small sensors as plain .py files, sandboxed in WebAssembly or run natively.

The public objects: `plugins.host.PluginHost` (the per-node runner), `plugins.manifest`
(permissions, limits, config), `plugins.services` (what a node lends its plugins) and
`plugins.errors`. Nothing here imports wasmtime; only `plugins.backends.wasm` does, lazily.
"""
