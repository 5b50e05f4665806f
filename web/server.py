"""Serve the Bottle app with waitress (multi-threaded) in a background thread."""

from __future__ import annotations

import logging
import threading
from typing import Any

from waitress.server import create_server

from web.app import create_app

log = logging.getLogger(__name__)


class WebServer:
    """The hub's HTTP server."""

    def __init__(self, agent: Any, host: str, port: int, threads: int = 8) -> None:
        self.app = create_app(agent.hub, agent.tokens, node=agent.config.name)
        self._server = create_server(self.app, host=host, port=port, threads=threads,
                                     ident="harvester", clear_untrusted_proxy_headers=True)
        self.port = self._server.effective_port
        self.url = f"http://{host}:{self.port}/"
        self._thread = threading.Thread(target=self._server.run, name="web", daemon=True)

    def start(self) -> WebServer:
        """Serve in the background."""
        self._thread.start()
        log.info("dashboard at %s", self.url)
        return self

    def stop(self) -> None:
        """Close the listening socket and stop serving."""
        self._server.close()
        self._thread.join(timeout=5)
