"""The fleet's private certificate authority: one CA, node certificates and user certificates.

Layout of a PKI directory (mode 0700, every private key 0600):
    ca.crt  ca.key                 the CA (keep ca.key off the nodes)
    nodes/<name>.crt  .key         serverAuth + clientAuth, SANs = the node's addresses
    users/<name>.crt  .key         clientAuth only (REPL users, scripts)
A node gets ca.crt plus its own pair; a user gets ca.crt plus theirs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hal.files import write_atomic
from hal.names import NODE_NAME_RULE, is_node_name
from nameserver.security import NODE, ORGANIZATION, USER, TlsFiles

HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")
CA_DAYS = 3650
NODE_DAYS = 825  # about two years: renew with the OS upgrade cycle of a Pi fleet
USER_DAYS = 365
# Pis have no real-time clock: until NTP syncs, a node's clock can lag the issuing machine's.
BACKDATE = dt.timedelta(days=1)


class CertError(ValueError):
    """A bad name, address or PKI directory."""


class KeyExistsError(CertError, FileExistsError):
    """A private key is already there; pass force=True (--force) to replace it."""


@dataclass(frozen=True)
class Pki:
    """Where a PKI directory keeps each file."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate every node and user trusts."""
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The CA's private key."""
        return self.root / "ca.key"

    def node(self, name: str) -> TlsFiles:
        """CA, certificate and key paths for node `name`."""
        return TlsFiles(self.ca_cert, self.root / "nodes" / f"{name}.crt", self.root / "nodes" / f"{name}.key")

    def user(self, name: str) -> TlsFiles:
        """CA, certificate and key paths for user `name`."""
        return TlsFiles(self.ca_cert, self.root / "users" / f"{name}.crt", self.root / "users" / f"{name}.key")


def check_name(name: str) -> str:
    """A node or user name: the same rule as config names, since it becomes the CN and a name prefix."""
    if not is_node_name(name):
        raise CertError(f"name {name!r} must match {NODE_NAME_RULE}")
    return name


def parse_hosts(hosts: list[str]) -> list[x509.GeneralName]:
    """IP addresses and DNS names as subject alternative names."""
    out: list[x509.GeneralName] = []
    for host in hosts:
        host = host.strip()
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not HOST_RE.match(host) or host.replace(".", "").isdigit():
            raise CertError(f"{host!r} is neither an IP address nor a DNS name")
        out.append(x509.DNSName(host.lower()))
    return out


def parse_node_spec(spec: str) -> tuple[str, list[str]]:
    """`NAME=IP[,IP|DNS...]` -> (name, hosts)."""
    name, sep, rest = spec.partition("=")
    hosts = [h for h in rest.split(",") if h.strip()]
    if not sep or not hosts:
        raise CertError(f"expected NAME=IP[,IP|DNS...] (the addresses clients dial), got {spec!r}")
    parse_hosts(hosts)
    return check_name(name.strip()), [h.strip() for h in hosts]


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, force: bool) -> None:
    if path.exists():
        if not force:
            raise KeyExistsError(f"{path} exists; refusing to overwrite a private key (use --force)")
        path.unlink()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # O_EXCL with 0600 from the start: the key is never briefly readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)  # a certificate is public


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def _name(cn: str, ou: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def init_ca(root: Path, force: bool = False, days: int = CA_DAYS) -> Pki:
    """Create the CA key (0600) and self-signed certificate in `root`."""
    pki = Pki(Path(root))
    _private_dir(pki.root)
    key = ec.generate_private_key(ec.SECP256R1())
    _write_key(pki.ca_key, key, force)
    # A random suffix: two fleets' CAs never share a subject, which keeps errors readable.
    subject = _name(f"Harvester fleet CA {os.urandom(4).hex()}")
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=True, crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    _write_cert(pki.ca_cert, cert)
    return pki


def load_ca(root: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key of an existing PKI directory."""
    pki = Pki(Path(root))
    if not pki.ca_key.is_file() or not pki.ca_cert.is_file():
        raise CertError(f"no CA in {pki.root} (run `harvester certs init --dir {pki.root}` first)")
    cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{pki.ca_key}: expected an EC private key")
    return cert, key


def _issue(root: Path, files: TlsFiles, cn: str, ou: str, usages: list[x509.ObjectIdentifier],
           sans: list[x509.GeneralName], days: int, force: bool) -> TlsFiles:
    ca_cert, ca_key = load_ca(root)
    _private_dir(files.cert.parent)
    key = ec.generate_private_key(ec.SECP256R1())
    _write_key(files.key, key, force)
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    builder = (x509.CertificateBuilder().subject_name(_name(cn, ou)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - BACKDATE).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=False, crl_sign=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    _write_cert(files.cert, builder.sign(ca_key, hashes.SHA256()))
    return files


def issue_node(root: Path, name: str, hosts: list[str], force: bool = False, days: int = NODE_DAYS) -> TlsFiles:
    """A node certificate: CN=name, OU=node, serverAuth + clientAuth, SANs for `hosts`."""
    sans = parse_hosts(hosts)
    if not sans:
        raise CertError(f"node {name}: give at least one address clients dial (NAME=IP[,IP|DNS...])")
    return _issue(Path(root), Pki(Path(root)).node(check_name(name)), name, NODE,
                  [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], sans, days, force)


def issue_user(root: Path, name: str, force: bool = False, days: int = USER_DAYS) -> TlsFiles:
    """A user certificate: CN=name, OU=user, clientAuth only (it cannot serve as a node)."""
    return _issue(Path(root), Pki(Path(root)).user(check_name(name)), name, USER,
                  [ExtendedKeyUsageOID.CLIENT_AUTH], [], days, force)


def init_pki(root: Path, nodes: list[tuple[str, list[str]]], users: list[str], force: bool = False) -> Pki:
    """A new CA plus node and user certificates; refuses to overwrite any key unless `force`."""
    pki = Pki(Path(root))
    if not force:
        # Check everything first, so a refusal never leaves a half-written PKI behind.
        targets = [pki.ca_key] + [pki.node(n).key for n, _ in nodes] + [pki.user(u).key for u in users]
        existing = [str(p) for p in targets if p.exists()]
        if existing:
            raise KeyExistsError(f"refusing to overwrite existing keys (use --force): {', '.join(existing)}")
    for name, hosts in nodes:
        check_name(name)
        parse_hosts(hosts)
    for user in users:
        check_name(user)
    init_ca(pki.root, force)
    for name, hosts in nodes:
        issue_node(pki.root, name, hosts, force)
    for user in users:
        issue_user(pki.root, user, force)
    return pki


def describe(path: Path) -> str:
    """One line about a certificate: subject, SANs and expiry."""
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = ", ".join(str(n.value) for n in names)
    except x509.ExtensionNotFound:
        sans = "-"
    return f"{path}: {cert.subject.rfc4514_string()}; SAN {sans}; expires {cert.not_valid_after_utc:%Y-%m-%d}"


def run_cli(command: str, root: Path, nodes: list[str], users: list[str], force: bool) -> int:
    """`harvester certs init|add-node|add-user`: issue, then print what was written."""
    try:
        specs = [parse_node_spec(n) for n in nodes]
        if command == "init":
            pki = init_pki(root, specs, users, force)
            written = [pki.ca_cert]
        else:
            pki, written = Pki(Path(root)), []
            load_ca(pki.root)  # a clear error before any key is written
        for name, hosts in specs:
            written.append(pki.node(name).cert if command == "init" else issue_node(root, name, hosts, force).cert)
        for user in users:
            written.append(pki.user(user).cert if command == "init" else issue_user(root, user, force).cert)
    except CertError as exc:
        print(f"harvester certs: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(describe(path))
    for name, _ in specs:
        f = pki.node(name)
        print(f"node {name}: copy {f.ca}, {f.cert} and {f.key} (mode 600) to it and set [security] "
              f"tls = true, ca, cert, key in its config")
    for user in users:
        f = pki.user(user)
        print(f"user {user}: HARVESTER_TLS_CA={f.ca} HARVESTER_TLS_CERT={f.cert} HARVESTER_TLS_KEY={f.key}")
    return 0
