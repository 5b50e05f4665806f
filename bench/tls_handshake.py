"""What a new Pyro5 connection costs with and without mutual TLS (loopback, one process).

    .venv/bin/python -m bench.tls_handshake [N]

Prints p50/p95 of "new proxy + first call" (TCP connect, TLS handshake, Pyro5 handshake, call)
and of a call on an open connection.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from Pyro5 import config
from Pyro5.api import Proxy, expose

from actors.cli import certs
from nameserver.pyro import configure
from nameserver.security import HarvesterDaemon, apply_tls


@expose
class Echo:
    """Answers pings."""

    def ping(self) -> str:
        """Answer."""
        return "pong"


def measure(uri: str, n: int) -> tuple[list[float], list[float]]:
    """Timings (s) of n fresh connections and of n calls on one connection."""
    fresh, warm = [], []
    for _ in range(n):
        t = time.perf_counter()
        with Proxy(uri) as p:
            p._pyroTimeout = 5
            p.ping()
        fresh.append(time.perf_counter() - t)
    with Proxy(uri) as p:
        p._pyroTimeout = 5
        p.ping()
        for _ in range(n):
            t = time.perf_counter()
            p.ping()
            warm.append(time.perf_counter() - t)
    return fresh, warm


def row(label: str, samples: list[float]) -> str:
    """One printed line: p50 and p95 in milliseconds."""
    q = statistics.quantiles(samples, n=20)
    return f"{label:<34} p50 {statistics.median(samples) * 1000:7.2f} ms   p95 {q[18] * 1000:7.2f} ms"


def serve() -> tuple[HarvesterDaemon, str]:
    """A daemon with one Echo object, in a background thread."""
    daemon = HarvesterDaemon(host="127.0.0.1", port=0)
    uri = str(daemon.register(Echo(), objectId="echo"))
    threading.Thread(target=daemon.requestLoop, daemon=True).start()
    return daemon, uri


def main(n: int = 200) -> None:
    """Plaintext, then TLS with SOCK_NODELAY on and off."""
    configure()
    daemon, uri = serve()
    fresh, warm = measure(uri, n)
    print(row("plaintext: new connection + call", fresh))
    print(row("plaintext: call on open connection", warm))
    daemon.shutdown()
    with tempfile.TemporaryDirectory() as tmp:
        pki = certs.init_pki(Path(tmp), [("bench", ["127.0.0.1"])], [])
        apply_tls(pki.node("bench"), serve=True)
        for nodelay in (True, False):
            config.SOCK_NODELAY = nodelay
            daemon, uri = serve()
            fresh, warm = measure(uri, n)
            print(row(f"TLS, nodelay={nodelay}: new conn + call", fresh))
            print(row(f"TLS, nodelay={nodelay}: call on open conn", warm))
            daemon.shutdown()
    configure()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
