"""`common/tls.py` and `create_channel`: TLS and mutual TLS against a real gRPC server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tls_helpers import TlsMaterial, client_tls, probe

from corolla.common.errors import InvalidArgument
from corolla.common.grpc import bind, create_channel, create_server
from corolla.common.tls import AppTls, ClientTls, ServerTls, security

pytestmark = pytest.mark.timeout(60)
SERVICE = "test.Echo"


def _echo_server(tls: ServerTls) -> Iterator[str]:
    server = create_server(max_workers=4)
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler}),)
    )
    port = bind(server, "127.0.0.1:0", tls.credentials())
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait(5)


@pytest.fixture
def mtls_server(tls_material: TlsMaterial) -> Iterator[str]:
    certs = tls_material.trusted
    yield from _echo_server(
        ServerTls.from_files(certs.server_cert, certs.server_key, certs.ca_cert)
    )


@pytest.fixture
def tls_server(tls_material: TlsMaterial) -> Iterator[str]:
    certs = tls_material.trusted
    yield from _echo_server(ServerTls.from_files(certs.server_cert, certs.server_key))


def _echo(address: str, roots: bytes, client: ClientTls | None) -> bytes:
    channel = create_channel(address, insecure=False, root_certificates=roots, client_tls=client)
    try:
        reply = channel.unary_unary(f"/{SERVICE}/Echo")(b"hello", timeout=10)
        assert isinstance(reply, bytes)
        return reply
    finally:
        channel.close()


def test_mutual_tls_accepts_only_a_certificate_of_its_ca(
    mtls_server: str, tls_material: TlsMaterial
) -> None:
    trusted, other = tls_material.trusted, tls_material.other
    roots = trusted.ca_cert.read_bytes()
    assert _echo(mtls_server, roots, client_tls(trusted.client("cli"))) == b"hello"
    for refused in (None, other.client("cli")):
        with pytest.raises(grpc.RpcError) as info:
            _echo(mtls_server, roots, client_tls(refused))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # The probe the daemon tests use tells the same apart.
    assert probe(mtls_server, trusted.ca_cert, None, SERVICE) == grpc.StatusCode.UNAVAILABLE
    assert probe(mtls_server, trusted.ca_cert, trusted.client("cli"), SERVICE) == (
        grpc.StatusCode.UNIMPLEMENTED
    )


def test_a_client_certificate_is_harmless_without_mutual_tls(
    tls_server: str, tls_material: TlsMaterial
) -> None:
    trusted = tls_material.trusted
    roots = trusted.ca_cert.read_bytes()
    assert _echo(tls_server, roots, client_tls(trusted.client("cli"))) == b"hello"
    assert _echo(tls_server, roots, None) == b"hello"


def test_server_tls_says_whether_it_is_mutual(tls_material: TlsMaterial) -> None:
    certs = tls_material.trusted
    plain = ServerTls.from_files(certs.server_cert, certs.server_key)
    mutual = ServerTls.from_files(certs.server_cert, certs.server_key, certs.ca_cert)
    assert (plain.mutual, mutual.mutual) == (False, True)
    assert mutual.client_ca == certs.ca_cert.read_bytes()
    assert (security(None), security(plain), security(mutual)) == ("insecure", "TLS", "mTLS")
    assert b"PRIVATE" not in repr(mutual).encode()


def test_a_key_of_another_certificate_is_refused_when_read(tls_material: TlsMaterial) -> None:
    certs = tls_material.trusted
    cli = certs.client("cli")
    with pytest.raises(InvalidArgument, match="does not belong to"):
        ServerTls.from_files(certs.server_cert, cli.key)
    with pytest.raises(InvalidArgument, match="does not belong to"):
        ClientTls.from_files(cli.cert, certs.client("supernode").key)


def test_a_server_certificate_is_no_client_certificate(tls_material: TlsMaterial) -> None:
    certs = tls_material.trusted
    with pytest.raises(InvalidArgument, match="not for client authentication"):
        ClientTls.from_files(certs.server_cert, certs.server_key)


def test_unreadable_encrypted_and_non_pem_files(tls_material: TlsMaterial, tmp_path: Path) -> None:
    cli = tls_material.trusted.client("cli")
    with pytest.raises(InvalidArgument, match="cannot read the client certificate"):
        ClientTls.from_files(tmp_path / "missing.pem", cli.key)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(InvalidArgument, match="is not a PEM file"):
        ClientTls.from_files(junk, cli.key)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass"),
        )
    )
    with pytest.raises(InvalidArgument, match="is encrypted"):
        ClientTls.from_files(cli.cert, encrypted)


def test_client_tls_from_options_wants_both_or_neither(tls_material: TlsMaterial) -> None:
    cli = tls_material.trusted.client("cli")
    names = ("--cert", "--key")
    assert ClientTls.from_options(None, None, names) is None
    loaded = ClientTls.from_options(cli.cert, cli.key, names)
    assert loaded is not None and loaded.certificate_chain == cli.cert.read_bytes()
    for half in ((cli.cert, None), (None, cli.key)):
        with pytest.raises(InvalidArgument, match="give both --cert and --key, or neither"):
            ClientTls.from_options(*half, names)


def test_an_insecure_channel_takes_no_client_certificate(tls_material: TlsMaterial) -> None:
    with pytest.raises(InvalidArgument, match="needs TLS"):
        create_channel(
            "127.0.0.1:1", insecure=True, client_tls=client_tls(tls_material.trusted.client("cli"))
        )


def test_app_tls_hands_over_paths_only(tls_material: TlsMaterial) -> None:
    certs = tls_material.trusted
    app = certs.client("serverapp")
    assert AppTls(certs.ca_cert).args() == ["--root-certificates", str(certs.ca_cert)]
    args = AppTls(certs.ca_cert, app.cert, app.key).args()
    assert args == [
        "--root-certificates",
        str(certs.ca_cert),
        "--ssl-client-certfile",
        str(app.cert),
        "--ssl-client-keyfile",
        str(app.key),
    ]
    assert not any("PRIVATE KEY" in arg for arg in args)
