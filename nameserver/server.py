"""Run the Pyro5 name server: embedded in the hub's agent, or alone (`harvester nameserver`)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from Pyro5 import config

from nameserver.cleaner import CLEAN_EVERY_S, UNREACHABLE_S
from nameserver.guarded import HarvesterNameServerDaemon
from nameserver.pyro import check_bind, configure

log = logging.getLogger(__name__)


class EmbeddedNameServer:
    """A name server running in a thread of this process; broadcast discovery is off."""

    def __init__(self, host: str, port: int, storage: Path | None = None,
                 allow_insecure: bool = False) -> None:
        configure()
        check_bind(host, tls=bool(config.SSL), allow_insecure=allow_insecure)
        # Broadcast discovery is unauthenticated UDP: clients name the host explicitly.
        store = f"sql:{storage}" if storage else None
        # Not start_ns(): our daemon checks client certificates and lets only nodes change names.
        self.daemon = HarvesterNameServerDaemon(host, port, storage=store)
        self.uri = self.daemon.uriFor(self.daemon.nameserver)
        self._thread = threading.Thread(target=self.daemon.requestLoop, name="nameserver", daemon=True)

    @property
    def port(self) -> int:
        """The bound TCP port (useful when started on port 0)."""
        return self.daemon.sock.getsockname()[1]

    def start(self) -> EmbeddedNameServer:
        """Serve in a background thread."""
        self._thread.start()
        log.info("name server at %s (names of a daemon unreachable for %.0f s are removed, checked every %.0f s)",
                 self.uri, UNREACHABLE_S, CLEAN_EVERY_S)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        cleaner = getattr(self.daemon, "cleaner_thread", None)
        if cleaner is not None:
            # A pass under way may wait CONNECT_TIMEOUT_S for a silent address: the thread (a
            # daemon thread) is told to stop and detached, so close() does not wait for it.
            cleaner.stop = True
            self.daemon.cleaner_thread = None
        self.daemon.shutdown()
        self._thread.join(timeout=5)
        self.daemon.close()


def serve_forever(host: str, port: int, storage: Path | None = None, allow_insecure: bool = False) -> None:
    """Run a stand-alone name server in the foreground until interrupted."""
    ns = EmbeddedNameServer(host, port, storage, allow_insecure)
    print(f"name server at {ns.uri}", flush=True)
    try:
        ns.daemon.requestLoop()
    finally:
        ns.daemon.close()
