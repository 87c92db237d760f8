"""TLS material for servers and clients (PEM files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from corolla.common.errors import InvalidArgument


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the {what} {path}: {exc}") from exc
    if b"-----BEGIN" not in data:
        raise InvalidArgument(f"the {what} {path} is not a PEM file")
    return data


@dataclass(frozen=True)
class ServerTls:
    """A server certificate chain and key, and optionally a CA to require client certificates."""

    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None

    @classmethod
    def from_files(
        cls, certfile: Path, keyfile: Path, ca_certfile: Path | None = None
    ) -> ServerTls:
        return cls(
            _read(certfile, "certificate"),
            _read(keyfile, "private key"),
            _read(ca_certfile, "CA certificate") if ca_certfile else None,
        )

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


def read_root_certificates(path: Path) -> bytes:
    return _read(path, "root certificate")
