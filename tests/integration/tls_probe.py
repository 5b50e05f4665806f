"""A separate process for TLS tests: Pyro5's TLS settings are process-wide, so each client
identity (or server variant) gets its own interpreter.

    python -m tests.integration.tls_probe call '<json spec>'   -> one JSON list of results
    python -m tests.integration.tls_probe serve '<json spec>'  -> prints {"uri": ...}, serves until stdin closes

Spec keys: "tls": null (plaintext) or {"ca", "cert"?, "key"?} (no cert = TLS without a client
certificate); "ns": [host, port]; "timeout"; "actions": [[verb, *args], ...] with verbs
list, lookup, register NAME URI, remove NAME, ping NAME (through actors.client), ping_uri URI.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from Pyro5 import config
from Pyro5.api import Proxy, expose

from nameserver.pyro import configure
from nameserver.registry import ns_uri
from nameserver.security import HarvesterDaemon, TlsFiles, apply_tls, ssl_context


def setup_tls(tls: dict[str, str] | None, serve: bool = False) -> None:
    """Plaintext, TLS without a client certificate, or TLS with one."""
    configure()
    if tls is None:
        return
    if "cert" in tls:
        apply_tls(TlsFiles(tls["ca"], tls["cert"], tls["key"]), serve=serve)
        return
    from Pyro5 import socketutil

    config.SSL, config.SSL_CACERTS = True, tls["ca"]
    socketutil.get_ssl_context = ssl_context


def run_action(spec: dict[str, Any], verb: str, *args: Any) -> Any:
    """One action on a fresh connection (so each one pays, and measures, a handshake)."""
    host, port = spec["ns"] if spec.get("ns") else ("", 0)
    if verb == "ping_uri":
        with Proxy(args[0]) as p:
            p._pyroTimeout = spec["timeout"]
            return p.ping()
    if verb == "ping":
        from actors.client import connect

        return connect(host, port, spec["timeout"]).actor(args[0]).call("ping")
    with Proxy(ns_uri(host, port)) as ns:
        ns._pyroTimeout = spec["timeout"]
        if verb == "list":
            return ns.list(prefix="harvester.")
        if verb == "lookup":
            return str(ns.lookup(args[0]))
        if verb == "register":
            return ns.register(args[0], args[1], metadata={"kind:test"})
        if verb == "remove":
            return ns.remove(args[0])
    raise ValueError(f"unknown verb {verb}")


def call(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Run every action; record value or error type and message, and elapsed time."""
    setup_tls(spec.get("tls"))
    out = []
    for verb, *args in spec["actions"]:
        start = time.perf_counter()
        try:
            value = run_action(spec, verb, *args)
            out.append({"verb": verb, "ok": True, "value": value, "elapsed": time.perf_counter() - start})
        except Exception as exc:  # the probe reports every failure to the test, typed
            out.append({"verb": verb, "ok": False, "error": type(exc).__name__, "message": str(exc),
                        "elapsed": time.perf_counter() - start})
    return out


@expose
class Echo:
    """A trivial remote object."""

    def ping(self) -> str:
        """Answer."""
        return "pong"


def serve(spec: dict[str, Any]) -> None:
    """A stock Pyro5 Daemon or our HarvesterDaemon with one object, until stdin closes."""
    from Pyro5.server import Daemon

    setup_tls(spec["tls"], serve=True)
    cls = Daemon if spec["kind"] == "stock" else HarvesterDaemon
    if "handshake_timeout" in spec:
        HarvesterDaemon.handshake_timeout = spec["handshake_timeout"]
    daemon = cls(host="127.0.0.1", port=0)
    uri = daemon.register(Echo(), objectId="echo")
    threading.Thread(target=daemon.requestLoop, daemon=True).start()
    print(json.dumps({"uri": str(uri), "port": daemon.sock.getsockname()[1]}), flush=True)
    sys.stdin.read()
    daemon.shutdown()


if __name__ == "__main__":
    command, raw = sys.argv[1], json.loads(sys.argv[2])
    if command == "call":
        print(json.dumps(call(raw), default=str))
    else:
        serve(raw)
