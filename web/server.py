"""Serve the Bottle app with waitress (multi-threaded) in a background thread."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask
from waitress.utilities import RequestEntityTooLarge

from actors.client import Fleet
from actors.hub.state import Hub
from actors.hub.tokens import Tokens
from web.app import create_app
from web.http import MAX_BODY
from web.upstream import CommandGate, Upstream

log = logging.getLogger(__name__)

# waitress buffers a whole request body (to a temporary file past 512 KiB) before the app
# sees it, and by default accepts 1 GiB: its own cap is what refuses a huge upload, on the
# declared Content-Length before reading any of it, or once a chunked body grows past it.
# It counts chunked framing (sizes, CRLFs) too, so it sits a little above the app's limit:
# bodies in between are read and refused by the app's exact check, with the same message.
BODY_CAP = MAX_BODY + 64 * 1024
OUTBUF_IN_MEMORY = 16 * 1024 * 1024  # a response body up to this is sent from memory


class JsonErrorTask(ErrorTask):
    """waitress's own refusals (body too large, malformed request) as JSON errors, like the app's."""

    def execute(self) -> None:
        """Answer the parser's error with {"error": ...} and close the connection."""
        err: Any = self.request.error
        if isinstance(err, RequestEntityTooLarge):
            declared = self.request.content_length
            size = f" of {declared} bytes" if declared else ""
            message = f"body{size} exceeds the {MAX_BODY}-byte limit; send at most {MAX_BODY} bytes"
        else:
            message = f"{err.reason}: {err.body}"
        body = json.dumps({"error": message}).encode()
        self.status = f"{err.code} {err.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), ("Cache-Control", "no-store")])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):
    """A waitress connection whose protocol-level errors answer in JSON."""

    error_task_class = JsonErrorTask


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
        # A thousand nodes make a 1.6 MB /api/readings body; waitress spills a body over
        # outbuf_overflow to a temporary file and sends it back from disk, a write and a read
        # of every response. Bodies up to OUTBUF_IN_MEMORY stay in memory.
        # poll(), not select(): every spoke keeps a connection to the hub, so with a thousand of
        # them a browser's connection gets a descriptor above 1023, which select() cannot watch
        # (waitress's loop died with "filedescriptor out of range in select()").
        self._server = create_server(self.app, host=host, port=port, threads=threads,
                                     ident="harvester", clear_untrusted_proxy_headers=True,
                                     max_request_body_size=BODY_CAP, outbuf_overflow=OUTBUF_IN_MEMORY,
                                     asyncore_use_poll=True)
        # the server of every listening address makes its connections' channels (several
        # addresses come as a MultiSocketServer whose map holds one server each)
        for server in [self._server, *getattr(self._server, "map", {}).values()]:
            if isinstance(server, BaseWSGIServer):
                server.channel_class = JsonErrorChannel
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
