"""The composition root: a node agent with what runs beside it. The only place that builds the web server."""

from __future__ import annotations

from actors.errors import cannot_listen
from actors.node.agent import NodeAgent
from actors.node.config import NodeConfig


def build_node(config: NodeConfig, hal_mode: str | None = None) -> NodeAgent:
    """The node `harvester node` runs: its agent, and on a hub the dashboard ([web]) and the
    Home Assistant bridge ([mqtt])."""
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
    mqtt = config.mqtt
    if config.is_hub and mqtt is not None:
        def home_assistant(node: NodeAgent):  # paho is imported by hubs with an [mqtt] table only
            from actors.hub.mqtt import MqttBridge, default_caller

            url = None
            if web is not None:  # a link Home Assistant can follow: not the wildcard address
                host = config.hub_host if web.host in ("0.0.0.0", "::") else web.host
                url = f"http://{'[' + host + ']' if ':' in host else host}:{web.port}/"
            group = node.role.group  # several hubs: the leader publishes the fleet
            return MqttBridge(mqtt, node.role.hub, config.name, default_caller(config.hub_host, config.nameserver_port),
                              url, leads=group.leads if group is not None else lambda: True)

        agent.attach(home_assistant)
    return agent

