"""Pyro5 actors and the node runtime: config, agent, outbox, aggregator, client, CLI."""

from __future__ import annotations

from typing import Any

__all__ = ["connect", "get_actor"]


def __getattr__(name: str) -> Any:
    """`from actors import connect` for the REPL, without every node importing the client on start."""
    if name in __all__:
        from actors import client

        return getattr(client, name)
    raise AttributeError(f"module 'actors' has no attribute {name!r}")
