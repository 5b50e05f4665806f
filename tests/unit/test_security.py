"""TLS settings, identities and the name server's write guard, without sockets."""

from __future__ import annotations

import dataclasses
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from Pyro5 import config, errors
from Pyro5.callcontext import current_context
from Pyro5.nameserver import MemoryStorage

from actors.cli import certs
from actors.node.agent import NodeAgent
from actors.node.config import ConfigError, load_config, parse_config
from nameserver import security
from nameserver.guarded import GuardedNameServer
from nameserver.pyro import InsecureBindError, check_bind
from nameserver.security import Identity, TlsConfigError, TlsFiles, identity_from_cert

MINIMAL = {"node": {"name": "pi4", "role": "spoke", "state_dir": "/tmp/x"}, "hub": {"host": "127.0.0.1"}}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> certs.Pki:
    return certs.init_pki(tmp_path_factory.mktemp("pki"), [("pi4", ["127.0.0.1"])], ["alice"])


@pytest.fixture
def pyro_tls_config(monkeypatch):
    """Let a test change Pyro5's process-wide TLS settings; monkeypatch restores them."""
    for name in ("SSL", "SSL_REQUIRECLIENTCERT", "SSL_CACERTS", "SSL_CLIENTCERT", "SSL_CLIENTKEY",
                 "SSL_SERVERCERT", "SSL_SERVERKEY"):
        monkeypatch.setattr(config, name, getattr(config, name))
    from Pyro5 import socketutil

    monkeypatch.setattr(socketutil, "get_ssl_context", socketutil.get_ssl_context)


def problems(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "node.toml")
    return info.value.problems


def test_security_config_defaults_to_plaintext():
    sec = parse_config(MINIMAL).security
    assert (sec.tls, sec.ca, sec.cert, sec.key) == (False, None, None, None)


def test_security_config_tls_needs_every_file():
    found = problems({**MINIMAL, "security": {"tls": True, "ca": "/nonexistent/ca.crt"}})
    assert found == [("security.cert", "missing (required when security.tls = true)"),
                     ("security.key", "missing (required when security.tls = true)")]


def test_security_missing_files_stop_the_node_with_a_clear_error(tmp_path):
    path = tmp_path / "pi4.toml"
    path.write_text(f'[node]\nname = "pi4"\nrole = "spoke"\nstate_dir = "{tmp_path}"\n[hub]\nhost = "127.0.0.1"\n'
                    '[security]\ntls = true\nca = "tls/ca.crt"\ncert = "tls/pi4.crt"\nkey = "tls/pi4.key"\n')
    # A child process: `harvester node` installs signal handlers that must not leak into pytest.
    res = subprocess.run([sys.executable, "-m", "actors.cli", "node", "--config", str(path)],
                         cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2, res.stderr
    assert f"security: CA certificate not found: {tmp_path / 'tls' / 'ca.crt'}" in res.stderr


def test_security_config_checks_types_and_keys():
    found = problems({**MINIMAL, "security": {"tls": "yes", "certificate": "x"}})
    assert ("security.certificate", "unknown key (known: tls, ca, cert, key)") in found
    assert any(k == "security.tls" and "must be boolean" in m for k, m in found)


def test_security_config_paths_are_relative_to_the_config_file(tmp_path, pki):
    node = pki.node("pi4")
    path = tmp_path / "pi4.toml"
    path.write_text('[node]\nname = "pi4"\nrole = "spoke"\nstate_dir = "state"\n[hub]\nhost = "127.0.0.1"\n'
                    f'[security]\ntls = true\nca = "{node.ca}"\ncert = "{node.cert}"\nkey = "key.pem"\n')
    (tmp_path / "key.pem").write_bytes(node.key.read_bytes())
    sec = load_config(path).security
    assert sec.tls and sec.key == tmp_path / "key.pem" and sec.cert == node.cert


def test_security_env_files_all_or_nothing(tmp_path):
    assert TlsFiles.from_env({}) is None
    with pytest.raises(TlsConfigError, match="missing: HARVESTER_TLS_KEY"):
        TlsFiles.from_env({"HARVESTER_TLS_CA": "a", "HARVESTER_TLS_CERT": "b"})
    files = TlsFiles.from_env({"HARVESTER_TLS_CA": "a", "HARVESTER_TLS_CERT": "b", "HARVESTER_TLS_KEY": "~/k"})
    assert files == TlsFiles(Path("a"), Path("b"), Path.home() / "k")


@pytest.mark.parametrize("subject, reason", [
    (((("commonName", "pi4"),),), "no Harvester identity"),
    (((("organizationalUnitName", "admin"),), (("commonName", "pi4"),)), "no Harvester identity"),
    (((("organizationalUnitName", "user"),), (("organizationalUnitName", "node"),), (("commonName", "x"),)),
     "no Harvester identity"),
    (((("organizationalUnitName", "node"),),), "no Harvester identity"),
])
def test_security_identity_needs_exactly_one_marker_and_name(subject, reason):
    with pytest.raises(errors.SecurityError, match=reason):
        identity_from_cert({"subject": subject})
    with pytest.raises(errors.SecurityError, match="no client certificate"):
        identity_from_cert({})


def test_security_contexts_trust_only_our_ca_and_require_certificates(pki):
    node = pki.node("pi4")
    server = security.ssl_context(servercert=str(node.cert), serverkey=str(node.key), cacerts=str(node.ca))
    client = security.ssl_context(clientcert=str(node.cert), clientkey=str(node.key), cacerts=str(node.ca))
    for ctx in (server, client):
        [ca] = ctx.get_ca_certs()  # not the system's public CAs, as ssl.create_default_context would add
        assert dict(x[0] for x in ca["subject"])["organizationName"] == "Harvester"
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert client.check_hostname
    assert security.ssl_context(servercert=str(node.cert), serverkey=str(node.key), cacerts=str(node.ca)) is server
    with pytest.raises(TlsConfigError, match="CA certificate file is missing"):
        security.ssl_context(clientcert=str(node.cert), cacerts="")


def test_security_a_user_process_cannot_serve(pki, pyro_tls_config):
    from Pyro5 import socketutil

    security.apply_tls(pki.user("alice"), serve=False)
    assert socketutil.get_ssl_context is security.ssl_context  # Pyro5's own trusts public CAs too
    assert config.SSL and str(pki.user("alice").cert) == config.SSL_CLIENTCERT and not config.SSL_SERVERCERT
    with pytest.raises(TlsConfigError, match="no server certificate"):
        security.HarvesterDaemon(host="127.0.0.1", port=0)


def test_security_a_node_process_keeps_its_identity(pki, pyro_tls_config):
    security.apply_tls(pki.node("pi4"), serve=True)
    assert security.use_client_tls(pki.node("pi4")) is True
    with pytest.raises(TlsConfigError, match="cannot call as"):
        security.use_client_tls(pki.user("alice"))


@pytest.fixture
def caller():
    """Pretend this thread serves a call from a connection with a given identity."""
    def as_(ident: Identity | None) -> None:
        current_context.client = SimpleNamespace(harvester_identity=ident)
    yield as_
    current_context.client = None


def guarded(enforce: bool = True) -> GuardedNameServer:
    return GuardedNameServer(MemoryStorage(), threading.RLock(), enforce=enforce)


def test_security_name_server_lets_a_node_change_only_its_names(caller):
    ns = guarded()
    caller(Identity("node", "pi4"))
    ns.register("harvester.pi4.dht22", "PYRO:x@127.0.0.1:1")
    ns.set_metadata("harvester.pi4.dht22", {"kind:sensor"})
    assert ns.lookup("harvester.pi4.dht22", return_metadata=True)[1] == {"kind:sensor"}
    for call in (lambda: ns.register("harvester.hub.aggregator", "PYRO:x@127.0.0.1:1"),
                 lambda: ns.register("harvester.pi40.x", "PYRO:x@127.0.0.1:1"),
                 lambda: ns.remove(prefix="harvester."),
                 lambda: ns.remove(regex="harvester.pi4.*")):
        with pytest.raises(errors.SecurityError):
            call()
    assert ns.remove(prefix="harvester.pi4.") == 1


@pytest.mark.parametrize("ident", [Identity("user", "pi4"), None])
def test_security_name_server_refuses_writes_from_users_and_unidentified(caller, ident):
    ns = guarded()
    caller(Identity("node", "pi4"))
    ns.register("harvester.pi4.dht22", "PYRO:x@127.0.0.1:1")
    caller(ident)
    with pytest.raises(errors.SecurityError, match="only node certificates may change names"):
        ns.register("harvester.pi4.fake", "PYRO:x@127.0.0.1:1")
    with pytest.raises(errors.SecurityError):
        ns.remove("harvester.pi4.dht22")
    assert list(ns.list(prefix="harvester.")) == ["harvester.pi4.dht22"]  # reads stay open


def test_security_name_server_without_tls_trusts_loopback(caller):
    ns = guarded(enforce=False)
    caller(None)
    ns.register("anything", "PYRO:x@127.0.0.1:1")
    assert ns.remove(regex="any.*") == 1


def test_security_plaintext_lan_bind_is_refused_before_any_socket(tmp_path):
    with pytest.raises(InsecureBindError, match="without TLS"):
        check_bind("192.0.2.10", tls=False, allow_insecure=False)
    check_bind("192.0.2.10", tls=True, allow_insecure=False)
    data = {"node": {"name": "pi4", "role": "spoke", "state_dir": str(tmp_path)},
            "hub": {"host": "127.0.0.1"}, "agent": {"host": "192.0.2.10"}}
    # the config check refuses it first, with the same rule ...
    with pytest.raises(ConfigError, match="agent.host: 192.0.2.10 is beyond loopback and security.tls is off"):
        parse_config(data)
    # ... and a config that got past it some other way still never opens the socket
    allowed = parse_config({**data, "agent": {**data["agent"], "allow_insecure_lan": True}})
    agent = NodeAgent(dataclasses.replace(allowed, allow_insecure_lan=False))
    try:
        with pytest.raises(InsecureBindError):
            agent.start()
        assert agent.daemon is None
    finally:
        agent.hal.close()
