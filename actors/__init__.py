"""Pyro5 actors and the node runtime: config, agent, outbox, aggregator, client, CLI."""

from actors.client import connect, get_actor

__all__ = ["connect", "get_actor"]
