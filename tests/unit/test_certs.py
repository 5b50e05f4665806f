"""The private CA: subjects, SANs, key usages, file modes, and refusing to overwrite keys."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from actors.cli import certs
from actors.cli.main import main
from nameserver.security import (
    Identity,
    TlsConfigError,
    check_node_certificate,
    identity_from_cert,
    read_certificate,
)


@pytest.fixture
def pki(tmp_path) -> certs.Pki:
    return certs.init_pki(tmp_path / "pki", [("hub", ["192.168.1.10", "hub.local", "127.0.0.1"])], ["alice"])


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def subject(cert: x509.Certificate, oid) -> list[str]:
    return [a.value for a in cert.subject.get_attributes_for_oid(oid)]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_certs_node_has_identity_sans_and_both_usages(pki):
    cert, ca = load(pki.node("hub").cert), load(pki.ca_cert)
    assert subject(cert, NameOID.COMMON_NAME) == ["hub"]
    assert subject(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == ["node"]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.168.1.10"),
                                                       ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["hub.local"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    cert.verify_directly_issued_by(ca)
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=certs.NODE_DAYS) <= life <= dt.timedelta(days=certs.NODE_DAYS + 2)


def test_certs_user_is_client_only_without_sans(pki):
    cert = load(pki.user("alice").cert)
    assert subject(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == ["user"]
    assert subject(cert, NameOID.COMMON_NAME) == ["alice"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    cert.verify_directly_issued_by(load(pki.ca_cert))


def test_certs_ca_signs_certificates_only(pki):
    ca = load(pki.ca_cert)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    assert ca.subject == ca.issuer


def test_certs_private_keys_are_0600_in_0700_folders(pki):
    for key in (pki.ca_key, pki.node("hub").key, pki.user("alice").key):
        assert mode(key) == 0o600, key
    for folder in (pki.root, pki.root / "nodes", pki.root / "users"):
        assert mode(folder) == 0o700, folder
    assert mode(pki.ca_cert) == 0o644


def test_certs_refuse_to_overwrite_keys_and_leave_them_untouched(pki):
    before = {p: p.read_bytes() for p in (pki.ca_key, pki.ca_cert, pki.node("hub").key)}
    with pytest.raises(certs.KeyExistsError, match="refusing to overwrite") as info:
        certs.init_pki(pki.root, [("hub", ["127.0.0.1"])], [])
    assert isinstance(info.value, FileExistsError)
    with pytest.raises(FileExistsError):
        certs.issue_node(pki.root, "hub", ["127.0.0.1"])
    assert {p: p.read_bytes() for p in before} == before


def test_certs_force_replaces_keys(pki):
    old = pki.node("hub").key.read_bytes()
    certs.issue_node(pki.root, "hub", ["127.0.0.1"], force=True)
    assert pki.node("hub").key.read_bytes() != old and mode(pki.node("hub").key) == 0o600


def test_certs_init_refusal_writes_nothing_new(tmp_path):
    pki = certs.init_pki(tmp_path, [], ["alice"])
    with pytest.raises(certs.KeyExistsError):
        certs.init_pki(tmp_path, [("pi4", ["127.0.0.1"])], ["alice"])
    assert not pki.node("pi4").key.exists()


@pytest.mark.parametrize("spec, message", [
    ("Hub=10.0.0.1", "must match"),
    ("hub", "expected NAME=IP"),
    ("hub=", "expected NAME=IP"),
    ("hub=not a host", "neither an IP address nor a DNS name"),
    ("hub=10.0.0.300", "neither an IP address nor a DNS name"),
])
def test_certs_bad_node_specs_are_refused(spec, message):
    with pytest.raises(certs.CertError, match=message):
        certs.parse_node_spec(spec)


def test_certs_issue_needs_an_existing_ca(tmp_path):
    with pytest.raises(certs.CertError, match="no CA"):
        certs.issue_user(tmp_path, "alice")


def test_certs_identity_reads_back_with_the_stdlib(pki):
    assert identity_from_cert(read_certificate(pki.node("hub").cert)) == Identity("node", "hub")
    assert identity_from_cert(read_certificate(pki.user("alice").cert)) == Identity("user", "alice")


def test_certs_node_certificate_must_match_node_name_and_address(pki):
    files = pki.node("hub")
    assert check_node_certificate(files, "hub", ["192.168.1.10", "hub.local", "0.0.0.0"]).is_node
    with pytest.raises(TlsConfigError, match="not of node:pi4"):
        check_node_certificate(files, "pi4", ["127.0.0.1"])
    with pytest.raises(TlsConfigError, match="no subject alternative name for 10.9.9.9"):
        check_node_certificate(files, "hub", ["10.9.9.9"])
    with pytest.raises(TlsConfigError, match="user:alice, not of node:alice"):
        check_node_certificate(pki.user("alice"), "alice", ["127.0.0.1"])


def test_certs_cli_init_add_and_refuse(tmp_path, capsys):
    d = str(tmp_path / "pki")
    assert main(["certs", "init", "--dir", d, "--node", "hub=127.0.0.1,localhost", "--user", "alice"]) == 0
    out = capsys.readouterr().out
    assert "CN=hub,OU=node,O=Harvester; SAN 127.0.0.1, localhost" in out and "HARVESTER_TLS_CERT=" in out
    assert main(["certs", "init", "--dir", d, "--node", "hub=127.0.0.1"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["certs", "add-node", "--dir", d, "pi4=192.168.1.20", "pizero=192.168.1.21"]) == 0
    assert main(["certs", "add-user", "--dir", d, "bob"]) == 0
    pki = certs.Pki(Path(d))
    assert pki.node("pizero").cert.exists() and pki.user("bob").key.exists()
    assert main(["certs", "add-user", "--dir", str(tmp_path / "nothing"), "carol"]) == 2


def test_certs_node_certificate_must_come_from_the_configured_ca(pki, tmp_path):
    other = certs.init_ca(tmp_path / "other")
    files = pki.node("hub")
    with pytest.raises(TlsConfigError, match="not issued by the CA"):
        check_node_certificate(type(files)(other.ca_cert, files.cert, files.key), "hub", ["127.0.0.1"])
