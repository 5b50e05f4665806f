"""Pyro5 actors and the node runtime: config, agent, outbox, aggregator, client, CLI."""

from actors.client import connect

__all__ = ["connect"]
