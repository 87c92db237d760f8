"""Development TLS material: a throwaway CA, a server certificate and named client certificates.

`generate` writes, as PEM files in one directory: ``ca.pem`` (the CA certificate: what every
side trusts), ``server.pem``/``server.key`` (for the hosts given, as subject alternative
names) and ``<name>.pem``/``<name>.key`` for each client name (client authentication, for
mutual TLS). Private keys are created with mode 0600. The CA's own key is never written: to
add a certificate, make a new set. For development and tests only (30 days, no revocation).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from corolla.common.errors import AlreadyExists, InvalidArgument
from corolla.common.paths import write_private

VALIDITY = datetime.timedelta(days=30)
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_CLIENTS = ("client",)
_RESERVED = ("ca", "server")  # the names of the other files
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class CertPaths:
    """Where `generate` wrote (or would write) each file."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    clients: Mapping[str, KeyPair] = field(default_factory=dict)
    hosts: tuple[str, ...] = ()
    not_valid_after: datetime.datetime | None = None

    def client(self, name: str) -> KeyPair:
        try:
            return self.clients[name]
        except KeyError:
            raise InvalidArgument(
                f"no client certificate {name!r} (made: {', '.join(self.clients)})"
            ) from None

    @property
    def client_cert(self) -> Path:
        """The first client's certificate (``client.pem`` by default)."""
        return next(iter(self.clients.values())).cert

    @property
    def client_key(self) -> Path:
        return next(iter(self.clients.values())).key

    def files(self) -> list[Path]:
        pairs = [KeyPair(self.server_cert, self.server_key), *self.clients.values()]
        return [self.ca_cert, *(path for pair in pairs for path in (pair.cert, pair.key))]


def check_host(host: str) -> str:
    """A DNS name (``*.`` allowed in front) or an IP address (IPv6 with or without brackets)."""
    text = host.strip()
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if len(text) > 253 or not _DNS_NAME.fullmatch(text):
        raise InvalidArgument(f"not a host name or IP address: {host!r}")
    return text.lower()


def check_client_name(name: str) -> str:
    """A file-name-safe client name: letters, digits, ``.``, ``_``, ``-`` (not ca or server)."""
    if not _CLIENT_NAME.fullmatch(name) or name in _RESERVED:
        raise InvalidArgument(
            f"client name {name!r}: use letters, digits, '.', '_' or '-' (up to 64, not "
            f"starting with a dot or dash), and not {' or '.join(_RESERVED)}"
        )
    return name


def paths(directory: Path, clients: Iterable[str] = DEFAULT_CLIENTS) -> CertPaths:
    """The files `generate` writes into ``directory`` for these clients (nothing is written)."""
    names = [check_client_name(name) for name in clients]
    if not names:
        raise InvalidArgument("at least one client certificate is needed")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidArgument(f"client name {duplicates[0]!r} given twice")
    return CertPaths(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        clients={
            name: KeyPair(directory / f"{name}.pem", directory / f"{name}.key") for name in names
        },
    )


def generate(
    directory: Path,
    hosts: Iterable[str] = DEFAULT_HOSTS,
    clients: Iterable[str] = DEFAULT_CLIENTS,
    *,
    overwrite: bool = True,
) -> CertPaths:
    """A CA, a server certificate for ``hosts`` and one client certificate per name in
    ``clients``, as PEM files in ``directory``; ``overwrite=False`` refuses to replace a file."""
    names = tuple(dict.fromkeys(check_host(host) for host in hosts))
    if not names:
        raise InvalidArgument("the server certificate needs at least one host")
    planned = paths(directory, clients)
    if not overwrite:
        existing = [path for path in planned.files() if path.exists()]
        if existing:
            raise AlreadyExists(f"{existing[0]} exists; not replacing it (overwrite=True does)")
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_after = now + VALIDITY
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _ca_certificate(ca_key, now, not_after)
    planned.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server = KeyPair(planned.server_cert, planned.server_key)
    leaves = [("server", server, ExtendedKeyUsageOID.SERVER_AUTH, names)]
    for name, pair in planned.clients.items():
        leaves.append((name, pair, ExtendedKeyUsageOID.CLIENT_AUTH, ()))
    for subject, pair, usage, sans in leaves:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _leaf(subject, key, ca_cert, ca_key, usage, sans, now, not_after)
        _write_key(key, pair.key)
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertPaths(
        planned.ca_cert,
        planned.server_cert,
        planned.server_key,
        planned.clients,
        hosts=names,
        not_valid_after=not_after,
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    """Owner-only from its creation (never readable by others, not even for a moment)."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path, data)


def _ca_certificate(
    key: ec.EllipticCurvePrivateKey, now: datetime.datetime, not_after: datetime.datetime
) -> x509.Certificate:
    name = _name("Corolla development CA")
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier,
    hosts: tuple[str, ...],
    now: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())
