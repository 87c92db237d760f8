"""TLS material for servers and clients (PEM files), and how it is named in logs.

`ServerTls` is the one place server credentials are built; with a ``client_ca`` the server
demands a client certificate signed by it (mutual TLS). `ClientTls` is a client's own
certificate and key, presented to a server that asks. `AppTls` is what a daemon hands, by path,
to an app process it starts so that it can reach the daemon's AppIo API over (mutual) TLS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from corolla.common.errors import InvalidArgument

if TYPE_CHECKING:  # cryptography is imported when a certificate is read: every Corolla
    from cryptography import x509  # process imports this module, few read certificates


INSECURE, TLS, MTLS = "insecure", "TLS", "mTLS"


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the {what} {path}: {exc}") from exc
    if b"-----BEGIN" not in data:
        raise InvalidArgument(f"the {what} {path} is not a PEM file")
    return data


def _check_pair(chain: bytes, key: bytes, certfile: Path, keyfile: Path) -> x509.Certificate:
    """The first certificate of ``chain``, after checking that ``key`` is its private key (gRPC
    would only fail at the first handshake, with a message in its own log)."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        certificate = x509.load_pem_x509_certificate(chain)
    except ValueError as exc:
        raise InvalidArgument(f"the certificate {certfile} cannot be parsed: {exc}") from exc
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except TypeError as exc:  # encrypted: gRPC cannot use it either
        raise InvalidArgument(
            f"the private key {keyfile} is encrypted; give it unencrypted"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidArgument(f"the private key {keyfile} cannot be parsed: {exc}") from exc
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private_key.public_key().public_bytes(der, spki) != certificate.public_key().public_bytes(
        der, spki
    ):
        raise InvalidArgument(f"the private key {keyfile} does not belong to {certfile}")
    return certificate


def _allows_client_auth(certificate: x509.Certificate) -> bool:
    """Whether the certificate may authenticate a client (no extended key usage: any use)."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return any(
        usage in usages
        for usage in (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)
    )


@dataclass(frozen=True)
class ServerTls:
    """A server certificate chain and key; with ``client_ca``, mutual TLS: every client must
    present a certificate signed by that CA, and a connection without one fails its handshake."""

    certificate_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None

    @classmethod
    def from_files(
        cls, certfile: Path, keyfile: Path, client_ca_file: Path | None = None
    ) -> ServerTls:
        chain, key = _read(certfile, "certificate"), _read(keyfile, "private key")
        _check_pair(chain, key, certfile, keyfile)
        client_ca = _read(client_ca_file, "CA certificate") if client_ca_file else None
        return cls(chain, key, client_ca)

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


def security(tls: ServerTls | None) -> str:
    """How a server is served, for logs: ``mTLS``, ``TLS`` or ``insecure``."""
    if tls is None:
        return INSECURE
    return MTLS if tls.mutual else TLS


@dataclass(frozen=True)
class ClientTls:
    """A client's own certificate chain and key, for servers that require one (mutual TLS).
    A server that does not ask for it never sees it, so giving one is always safe."""

    certificate_chain: bytes
    private_key: bytes = field(repr=False)

    @classmethod
    def from_files(cls, certfile: Path, keyfile: Path) -> ClientTls:
        chain, key = _read(certfile, "client certificate"), _read(keyfile, "client private key")
        certificate = _check_pair(chain, key, certfile, keyfile)
        if not _allows_client_auth(certificate):
            raise InvalidArgument(
                f"the certificate {certfile} is not for client authentication (its extended "
                "key usage lacks clientAuth); servers requiring client certificates refuse it"
            )
        return cls(chain, key)

    @classmethod
    def from_options(
        cls, certfile: Path | None, keyfile: Path | None, names: tuple[str, str]
    ) -> ClientTls | None:
        """Both files (read and checked) or neither (None); ``names`` say how the two options
        are called where they were given, for the message when only one is."""
        if certfile is None and keyfile is None:
            return None
        if certfile is None or keyfile is None:
            raise InvalidArgument(f"give both {names[0]} and {names[1]}, or neither")
        return cls.from_files(certfile, keyfile)


@dataclass(frozen=True)
class AppTls:
    """How an app process a daemon starts reaches that daemon's AppIo API over TLS: the CA to
    trust and, for mutual TLS, a client certificate and key. Handed over by path (the child reads
    the files itself): no key material ever goes on a command line."""

    root_certificates: Path
    client_certfile: Path | None = None
    client_keyfile: Path | None = None

    def args(self) -> list[str]:
        """The options of ``flwr-serverapp``/``flwr-clientapp`` that say all this."""
        args = ["--root-certificates", str(self.root_certificates)]
        if self.client_certfile is not None and self.client_keyfile is not None:
            args += ["--ssl-client-certfile", str(self.client_certfile)]
            args += ["--ssl-client-keyfile", str(self.client_keyfile)]
        return args


def read_root_certificates(path: Path) -> bytes:
    return _read(path, "root certificate")
