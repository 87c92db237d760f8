"""TLS test helpers: the session's certificates and a probe of whether a server accepts a client."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from corolla.common.grpc import create_channel
from corolla.common.tls import ClientTls
from corolla.deploy.certs import CertPaths, KeyPair

CLIENTS = ("client", "cli", "supernode", "serverapp", "clientapp")
PROBE_TIMEOUT = 10.0


@dataclass(frozen=True)
class TlsMaterial:
    """``trusted``: a CA with a server certificate (loopback names) and client certificates
    (`CLIENTS`); ``other``: an unrelated CA with the same files, whose certificates the
    ``trusted`` servers must refuse."""

    trusted: CertPaths
    other: CertPaths


def client_tls(pair: KeyPair | None) -> ClientTls | None:
    return None if pair is None else ClientTls.from_files(pair.cert, pair.key)


def probe(address: str, ca_cert: Path, client: KeyPair | None, service: str) -> grpc.StatusCode:
    """The status of a call of a method ``service`` does not have: UNAVAILABLE when the TLS
    handshake is refused, a status of the server (UNIMPLEMENTED, or a refusal of its auth
    layer) when the connection was accepted."""
    channel = create_channel(
        address,
        insecure=False,
        root_certificates=ca_cert.read_bytes(),
        client_tls=client_tls(client),
    )
    try:
        call = channel.unary_unary(f"/{service}/NoSuchMethod")
        call(b"", timeout=PROBE_TIMEOUT)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    finally:
        channel.close()
    return grpc.StatusCode.OK
