"""Serve the Bottle app with waitress (multi-threaded) in a background thread."""

from __future__ import annotations

import logging
import threading

from waitress.server import create_server

from actors.client import Fleet
from actors.hub.state import Hub
from actors.hub.tokens import Tokens
from web.app import create_app
from web.upstream import CommandGate, Upstream

log = logging.getLogger(__name__)


class WebServer:
    """The hub's HTTP server, with a fleet client on the hub's own name server for operator commands."""

    def __init__(self, hub: Hub, tokens: Tokens, node: str, ns_host: str, ns_port: int, host: str, port: int,
                 public_read: bool = True, local_actors: frozenset[str] = frozenset(), threads: int = 8) -> None:
        # The hub process already has its TLS settings (if any): the fleet client inherits them.
        try:
            fleet: Fleet | None = Fleet(ns_host, ns_port)
        except Exception as exc:  # e.g. HARVESTER_TLS_* naming a user cert in a node's environment
            log.error("dashboard controls disabled: cannot build the fleet client: %s: %s", type(exc).__name__, exc)
            fleet = None
        # a node the hub's prober found not answering gets no command that would wait for it
        self.upstream = Upstream(fleet, gate=CommandGate(reachability=hub.reachability))
        self.app = create_app(hub, tokens, node=node, upstream=self.upstream, public_read=public_read,
                              local_actors=local_actors)
        self._server = create_server(self.app, host=host, port=port, threads=threads,
                                     ident="harvester", clear_untrusted_proxy_headers=True)
        self.port = self._server.effective_port
        self.url = f"http://{host}:{self.port}/"
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="web", daemon=True)

    def _serve(self) -> None:
        try:
            self._server.run()
        except OSError:
            # stop() closes the sockets under the loop's select(): EBADF is how that ends
            if not self._stopping.is_set():
                raise

    def start(self) -> WebServer:
        """Serve in the background."""
        self._thread.start()
        log.info("dashboard at %s", self.url)
        return self

    def stop(self) -> None:
        """Close the listening socket and stop serving."""
        self._stopping.set()
        self._server.close()
        self._thread.join(timeout=5)
        self.upstream.close()
