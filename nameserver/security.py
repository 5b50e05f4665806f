"""Mutual TLS for every Pyro5 connection: process-wide TLS settings, a daemon that checks
who is calling, and a name server that lets only nodes change names.

Pyro5's TLS settings are process-global, so a process chooses once:
- a node applies its `[security]` files at start (`apply_node_tls`), for serving and calling;
- a REPL user passes `connect(host, port, tls=TlsFiles(...))` or sets HARVESTER_TLS_CA,
  HARVESTER_TLS_CERT and HARVESTER_TLS_KEY (`TlsFiles.from_env`).

Identity is the peer certificate's subject: OU=node or OU=user (the marker `harvester certs`
writes) and CN=<node or user name>. Only certificates signed by our CA are accepted, because
we build the TLS contexts ourselves (Pyro5's own also trust the system's public CAs).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from Pyro5 import config, errors, socketutil
from Pyro5.callcontext import current_context
from Pyro5.server import Daemon
from Pyro5.svr_threads import SocketServer_Threadpool

from nameserver.transport import SelectorPoolServer

log = logging.getLogger(__name__)

NODE, USER = "node", "user"
IDENTITY_KINDS = (NODE, USER)
ORGANIZATION = "Harvester"
ENV_CA, ENV_CERT, ENV_KEY = "HARVESTER_TLS_CA", "HARVESTER_TLS_CERT", "HARVESTER_TLS_KEY"
# A peer must finish the TLS handshake and Pyro5's own within this: the selector transport
# closes a connection silent this long, and a worker doing a handshake gives up after it.
HANDSHAKE_TIMEOUT = 5.0


class TlsConfigError(ValueError):
    """TLS material is missing, unreadable or does not fit this node."""


@dataclass(frozen=True)
class TlsFiles:
    """A CA certificate plus one identity's certificate and private key (PEM files)."""

    ca: Path
    cert: Path
    key: Path

    def __post_init__(self) -> None:
        for name in ("ca", "cert", "key"):  # accept str from a REPL; expand ~
            object.__setattr__(self, name, Path(getattr(self, name)).expanduser())

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> TlsFiles | None:
        """Files named by HARVESTER_TLS_CA/CERT/KEY; None when none is set."""
        env = dict(os.environ) if env is None else env
        values = {k: env.get(k, "") for k in (ENV_CA, ENV_CERT, ENV_KEY)}
        if not any(values.values()):
            return None
        missing = [k for k, v in values.items() if not v]
        if missing:
            raise TlsConfigError(f"set all of {ENV_CA}, {ENV_CERT}, {ENV_KEY}; missing: {', '.join(missing)}")
        return cls(Path(values[ENV_CA]), Path(values[ENV_CERT]), Path(values[ENV_KEY]))

    def check(self) -> None:
        """Raise TlsConfigError unless every file exists; warn about a key others can read."""
        for what, path in (("CA certificate", self.ca), ("certificate", self.cert), ("private key", self.key)):
            if not path.is_file():
                raise TlsConfigError(f"{what} not found: {path}")
        mode = self.key.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("private key %s is readable by group/others (mode %o); chmod 600 it",
                        self.key, stat.S_IMODE(mode))


@dataclass(frozen=True)
class Identity:
    """Who is on the other end of a TLS connection: a node or a user, by name."""

    kind: str
    name: str

    @property
    def is_node(self) -> bool:
        """True for a node certificate (OU=node)."""
        return self.kind == NODE

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def identity_from_cert(cert: dict[str, Any] | None) -> Identity:
    """The identity in a peer certificate (as `SSLSocket.getpeercert()` returns it)."""
    if not cert:
        raise errors.SecurityError("no client certificate")
    fields: dict[str, list[str]] = {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            fields.setdefault(key, []).append(value)
    kinds = fields.get("organizationalUnitName", [])
    names = fields.get("commonName", [])
    # Exactly one marker and one name: a certificate with two OUs must not count as both.
    if len(kinds) != 1 or kinds[0] not in IDENTITY_KINDS or len(names) != 1 or not names[0]:
        raise errors.SecurityError("certificate carries no Harvester identity (OU=node|user, CN=name)")
    return Identity(kinds[0], names[0])


def caller_identity() -> Identity | None:
    """The identity of the client whose call this thread is serving; None without TLS."""
    conn = getattr(current_context, "client", None)
    return getattr(conn, "harvester_identity", None)


# -- TLS contexts ------------------------------------------------------------------------
_contexts: dict[tuple[Any, ...], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def _build_context(server: bool, cert: str, key: str, ca: str, password: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3  # both ends are ours; no reason to negotiate less
    # Only our CA: ssl.create_default_context (what Pyro5 uses) also trusts every public CA.
    ctx.load_verify_locations(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key or None, password or None)
    # Mutual TLS always: a server never accepts a client without a certificate. A client
    # context (PROTOCOL_TLS_CLIENT) already requires the server's certificate and host name.
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def ssl_context(servercert: str = "", serverkey: str = "", clientcert: str = "", clientkey: str = "",
                cacerts: str = "", keypassword: str = "") -> ssl.SSLContext:
    """Pyro5's `socketutil.get_ssl_context`, trusting only our CA and cached per file set."""
    if not cacerts or not os.path.isfile(cacerts):
        raise TlsConfigError(f"TLS is on but the CA certificate file is missing: {cacerts!r}")
    server = bool(servercert)
    spec = (server, servercert or clientcert, serverkey or clientkey, cacerts, keypassword)
    with _contexts_lock:
        ctx = _contexts.get(spec)
        if ctx is None:
            ctx = _contexts[spec] = _build_context(server, *spec[1:])
        return ctx


def apply_tls(files: TlsFiles, serve: bool) -> None:
    """Turn on mutual TLS for this whole process; `serve` also sets the server certificate."""
    files.check()
    config.SSL = True
    config.SSL_REQUIRECLIENTCERT = True
    config.SSL_CACERTS = str(files.ca)
    config.SSL_CLIENTCERT, config.SSL_CLIENTKEY = str(files.cert), str(files.key)
    config.SSL_SERVERCERT, config.SSL_SERVERKEY = (str(files.cert), str(files.key)) if serve else ("", "")
    # Pyro5 looks this function up on the module at every connect, so replacing it is enough.
    socketutil.get_ssl_context = ssl_context


def use_client_tls(files: TlsFiles | None = None) -> bool:
    """TLS for calling out: `files`, else HARVESTER_TLS_* variables, else this process's current setting."""
    files = files or TlsFiles.from_env()
    if files is None:
        return tls_enabled()
    if config.SSL and config.SSL_SERVERCERT:
        if Path(config.SSL_CLIENTCERT) == files.cert:
            return True
        # A node calls with its own identity; silently switching would break its daemon's peers.
        raise TlsConfigError(f"this process serves as {config.SSL_SERVERCERT}; it cannot call as {files.cert}")
    apply_tls(files, serve=False)
    return True


def tls_enabled() -> bool:
    """True when this process speaks TLS."""
    return bool(config.SSL)


def read_certificate(path: Path) -> dict[str, Any]:
    """A PEM certificate decoded to the dict form `getpeercert()` returns (stdlib only)."""
    # The public ssl API decodes only peer certificates; this helper has been in CPython's _ssl
    # since 2.7 and keeps nodes free of the `cryptography` import (+11 MB RSS on a Pi Zero).
    decode = getattr(ssl._ssl, "_test_decode_cert", None)  # type: ignore[attr-defined]
    if decode is None:
        raise TlsConfigError("this Python cannot decode certificates (no ssl._ssl._test_decode_cert)")
    try:
        return decode(str(path))
    except ssl.SSLError as exc:
        raise TlsConfigError(f"{path}: not a PEM certificate: {exc}") from exc


def _san_covers(cert: dict[str, Any], host: str) -> bool:
    sans = cert.get("subjectAltName", ())
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return any(kind == "DNS" and value.lower() == host.lower() for kind, value in sans)
    return any(kind == "IP Address" and ipaddress.ip_address(value.strip()) == ip for kind, value in sans)


def check_node_certificate(files: TlsFiles, node: str, hosts: list[str]) -> Identity:
    """Fail fast when a node's certificate is not a node certificate for this node and its addresses."""
    files.check()
    cert = read_certificate(files.cert)
    try:
        ident = identity_from_cert(cert)
    except errors.SecurityError as exc:
        raise TlsConfigError(f"{files.cert}: {exc}") from None
    issuer, ca_subject = cert.get("issuer"), read_certificate(files.ca).get("subject")
    if issuer != ca_subject:
        raise TlsConfigError(f"{files.cert} was not issued by the CA in {files.ca}; peers would refuse it")
    if not ident.is_node or ident.name != node:
        raise TlsConfigError(f"{files.cert} is the certificate of {ident}, not of node:{node}; "
                             f"issue one with `harvester certs add-node --dir PKI {node}=ADDRESS`")
    for host in hosts:
        # 0.0.0.0 is a bind-all, never a URI host; clients dial a concrete address.
        if host not in ("0.0.0.0", "::") and not _san_covers(cert, host):
            raise TlsConfigError(f"{files.cert} has no subject alternative name for {host}: clients "
                                 f"dialing {host} would reject it; reissue with {node}={host}")
    return ident


def check_node_tls(cfg: Any) -> tuple[TlsFiles, Identity]:
    """A node config's `[security]` files, checked against its name and addresses (TlsConfigError)."""
    sec = cfg.security
    files = TlsFiles(sec.ca, sec.cert, sec.key)
    hosts = [cfg.agent_host] + ([cfg.hub_host] if cfg.is_hub else [])
    return files, check_node_certificate(files, cfg.name, hosts)


def apply_node_tls(cfg: Any) -> Identity:
    """Check a node's `[security]` files against its config, then turn on TLS for serving and calling."""
    files, ident = check_node_tls(cfg)
    apply_tls(files, serve=True)
    log.info("mutual TLS on as %s (CA %s)", ident, files.ca)
    return ident


# -- daemons -----------------------------------------------------------------------------
class SecureDaemonMixin:
    """Handshake off the accept loop, a bounded handshake time, and the caller's identity on each connection."""

    handshake_timeout: float = HANDSHAKE_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if config.SSL and not config.SSL_SERVERCERT:
            raise TlsConfigError("TLS is on but this process has no server certificate (a user "
                                 "certificate cannot serve); use a node certificate")
        super().__init__(*args, **kwargs)
        sock = self.sock  # type: ignore[attr-defined]
        if isinstance(sock, ssl.SSLSocket):
            # Pyro5 would run the TLS handshake inside accept(), so one idle TCP connection would
            # stall every new client (test_tls reproduces it). Accepted sockets inherit this flag, and
            # _handshake runs the TLS handshake in the connection's worker thread instead.
            sock.do_handshake_on_connect = False
        server = self.transportServer  # type: ignore[attr-defined]
        if isinstance(server, SocketServer_Threadpool):
            # idle connections must not hold worker threads (see nameserver.transport)
            self.transportServer = SelectorPoolServer.adopt(self, server)

    def _handshake(self, conn: Any, denied_reason: str | None = None) -> bool:
        if denied_reason:
            # Pyro5 calls this on the accept thread when its pool is full; talking to the peer
            # there would stall the accept loop again, so refuse by closing.
            log.warning("refused connection from %s: %s", _peer(conn), denied_reason)
            return False
        previous = conn.gettimeout()
        conn.settimeout(self.handshake_timeout)
        if isinstance(conn.sock, ssl.SSLSocket) and not self._tls_handshake(conn):
            return False
        ok = super()._handshake(conn)  # type: ignore[misc]
        if ok:
            conn.settimeout(previous)
        return ok

    def _tls_handshake(self, conn: Any) -> bool:
        """Run the TLS handshake here, in the worker thread, within handshake_timeout."""
        try:
            conn.sock.do_handshake()
        except (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError) as exc:
            # TCP probes (our network sensors, port scanners) connect and close: not worth a warning.
            log.debug("%s closed before the TLS handshake: %s", _peer(conn), exc)
            return False
        except TimeoutError:
            log.info("%s sent no TLS handshake within %.0fs; closed", _peer(conn), self.handshake_timeout)
            return False
        except OSError as exc:  # ssl.SSLError included: bad certificate, wrong CA, plaintext client
            hint = " (a plaintext client?)" if "WRONG_VERSION_NUMBER" in str(exc) else ""
            log.warning("TLS handshake with %s failed: %s%s", _peer(conn), exc, hint)
            return False
        return True

    def validateHandshake(self, conn: Any, data: Any) -> Any:  # noqa: N802  (Pyro5's name)
        """Accept only certificates with a Harvester identity; remember it on the connection."""
        if isinstance(conn.sock, ssl.SSLSocket):
            try:
                conn.harvester_identity = identity_from_cert(conn.getpeercert())
            except errors.SecurityError as exc:
                log.warning("refused connection from %s: %s", _peer(conn), exc)
                raise
            log.debug("connection from %s as %s", _peer(conn), conn.harvester_identity)
        return super().validateHandshake(conn, data)  # type: ignore[misc]


def _peer(conn: Any) -> str:
    try:
        host, port = conn.sock.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


class HarvesterDaemon(SecureDaemonMixin, Daemon):
    """The node's Pyro5 daemon (plaintext on loopback, mutual TLS otherwise)."""
