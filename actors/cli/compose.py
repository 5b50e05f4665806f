"""The composition root: a node agent with what runs beside it. The only place that builds the web server."""

from __future__ import annotations

from actors.errors import cannot_listen
from actors.node.agent import NodeAgent
from actors.node.config import NodeConfig


def build_node(config: NodeConfig, hal_mode: str | None = None) -> NodeAgent:
    """The node `harvester node` runs: its agent, and on a hub with a [web] table the dashboard."""
    agent = NodeAgent(config, hal_mode)
    web = config.web
    if config.is_hub and web is not None:
        def dashboard(node: NodeAgent):  # called once the hub's store and actors exist
            from web.server import WebServer

            hub_role = node.role
            try:
                return WebServer(hub_role.hub, hub_role.tokens, config.name, config.hub_host,
                                 config.nameserver_port, web.host, web.port, public_read=web.public_read,
                                 local_actors=frozenset(a.name for a in node.actors))
            except OSError as exc:
                raise cannot_listen("web.port", web.host, web.port, exc) from exc

        agent.attach(dashboard)
    return agent

