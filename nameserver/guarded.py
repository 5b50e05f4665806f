"""The hub's name server: Pyro5's, where under TLS a node may change only its own names.

Apart from nameserver.security so that spokes, which only look names up, never import Pyro5's
name server module (about half a megabyte)."""

from __future__ import annotations

import logging
from typing import Any

from Pyro5 import config, core, errors
from Pyro5.nameserver import NameServer, NameServerDaemon
from Pyro5.server import expose

from hal.names import PREFIX
from nameserver.security import SecureDaemonMixin, caller_identity

log = logging.getLogger(__name__)


@expose
class GuardedNameServer(NameServer):
    """A name server where, under TLS, only node `N` may register or remove `harvester.N.*` names."""

    def __init__(self, storage: Any, lock: Any, enforce: bool) -> None:
        super().__init__(storage)
        self.lock = lock  # shared with the daemon's own NameServer, which the autocleaner uses
        self._enforce = enforce

    def _check_write(self, what: str, target: str | None) -> None:
        if not self._enforce:
            return  # plaintext: loopback only, every local process is trusted
        ident = caller_identity()
        if ident is None or not ident.is_node:
            log.warning("refused %s(%r) from %s: only nodes may change names", what, target, ident)
            raise errors.SecurityError(f"{what} refused: only node certificates may change names "
                                       f"(caller is {ident or 'unidentified'})")
        own = f"{PREFIX}.{ident.name}."
        if not isinstance(target, str) or not target.startswith(own):
            log.warning("refused %s(%r) from %s: outside its namespace", what, target, ident)
            raise errors.SecurityError(f"{what} refused: node {ident.name} may only change {own}* names")

    def register(self, name: str, uri: Any, safe: bool = False, metadata: Any = None) -> None:
        """Register a name (nodes only, in their own namespace)."""
        self._check_write("register", name)
        return super().register(name, uri, safe, metadata)

    def set_metadata(self, name: str, metadata: Any) -> None:
        """Replace a name's metadata (nodes only, in their own namespace)."""
        self._check_write("set_metadata", name)
        return super().set_metadata(name, metadata)

    def remove(self, name: str | None = None, prefix: str | None = None, regex: str | None = None) -> int:
        """Remove a name or a prefix (nodes only, in their own namespace; no regex under TLS)."""
        if name:
            self._check_write("remove", name)
        elif prefix:
            self._check_write("remove", prefix)
        elif regex and self._enforce:
            raise errors.SecurityError("remove by regex is refused under TLS: it cannot be bounded to a namespace")
        return super().remove(name, prefix, regex)


class HarvesterNameServerDaemon(SecureDaemonMixin, NameServerDaemon):
    """Pyro5's name server daemon serving a GuardedNameServer; broadcast is never started."""

    def __init__(self, host: str, port: int, storage: str | None = None) -> None:
        super().__init__(host=host, port=port, storage=storage)
        plain = self.nameserver
        guarded = GuardedNameServer(plain.storage, plain.lock, enforce=bool(config.SSL))
        # Same object id, so the URI stays PYRO:Pyro.NameServer@host:port. The autocleaner keeps
        # the unguarded object: its local removals are not remote calls and carry no identity.
        self.unregister(core.NAMESERVER_NAME)
        self.register(guarded, core.NAMESERVER_NAME)
        self.nameserver = guarded
