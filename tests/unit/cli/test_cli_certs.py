"""`flwr certs`: the files it writes, their modes, and that they work for mutual TLS."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from corolla.cli.main import run_cli
from corolla.common.grpc import bind, create_channel, create_server
from corolla.common.tls import ClientTls, ServerTls
from corolla.deploy.certs import generate

pytestmark = pytest.mark.timeout(60)


def _names(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in sans]


def _usage(path: Path) -> list[x509.ObjectIdentifier]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_writes_a_ca_a_server_and_named_clients(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "certs"
    argv = ["certs", str(out), "--host", "link.example", "--host", "10.1.2.3"]
    assert run_cli([*argv, "--client", "cli", "--client", "supernode-1"]) == 0
    files = sorted(path.name for path in out.iterdir())
    assert files == [
        "ca.pem",
        "cli.key",
        "cli.pem",
        "server.key",
        "server.pem",
        "supernode-1.key",
        "supernode-1.pem",
    ]
    for key in out.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    printed = capsys.readouterr().out
    for name in files:
        assert str(out / name) in printed
    assert "localhost, 127.0.0.1, ::1, link.example, 10.1.2.3" in printed
    assert _names(out / "server.pem") == [
        "localhost",
        "127.0.0.1",
        "::1",
        "link.example",
        "10.1.2.3",
    ]
    assert _usage(out / "server.pem") == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert _usage(out / "cli.pem") == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_the_files_work_for_mutual_tls(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    assert run_cli(["certs", str(out), "--client", "cli"]) == 0
    server = create_server(max_workers=2)
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request[::-1])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", {"M": handler}),))
    tls = ServerTls.from_files(out / "server.pem", out / "server.key", out / "ca.pem")
    port = bind(server, "127.0.0.1:0", tls.credentials())
    server.start()
    try:
        for host in ("127.0.0.1", "localhost"):
            channel = create_channel(
                f"{host}:{port}",
                insecure=False,
                root_certificates=(out / "ca.pem").read_bytes(),
                client_tls=ClientTls.from_files(out / "cli.pem", out / "cli.key"),
            )
            try:
                assert channel.unary_unary("/t.T/M")(b"abc", timeout=10) == b"cba"
            finally:
                channel.close()
    finally:
        server.stop(0).wait(5)


def test_refuses_to_replace_files_unless_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "certs"
    assert run_cli(["certs", str(out)]) == 0
    before = (out / "ca.pem").read_bytes()
    capsys.readouterr()
    assert run_cli(["certs", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"flwr certs: {out / 'ca.pem'} exists; --overwrite replaces it\n"
    assert (out / "ca.pem").read_bytes() == before
    (out / "client.key").chmod(0o644)
    assert run_cli(["certs", str(out), "--overwrite"]) == 0
    assert (out / "ca.pem").read_bytes() != before
    assert stat.S_IMODE((out / "client.key").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--client", "ca"], "client name 'ca'"),
        (["--client", "../x"], "client name '../x'"),
        (["--client", "a", "--client", "a"], "'a' given twice"),
        (["--host", "bad host"], "not a host name or IP address: 'bad host'"),
        (["--host", ""], "not a host name"),
    ],
)
def test_bad_names_are_usage_errors(
    args: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["certs", str(tmp_path / "certs"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flwr certs: ") and needle in err and err.count("\n") == 1
    assert not (tmp_path / "certs").exists()


def test_generate_keeps_hosts_and_clients_in_order(tmp_path: Path) -> None:
    written = generate(tmp_path, ("LOCALHOST", "[::1]", "::1", "*.example.org"), ("b", "a"))
    assert written.hosts == ("localhost", "::1", "*.example.org")
    assert list(written.clients) == ["b", "a"]
    assert written.client_cert == tmp_path / "b.pem"
    ips = [name for name in _names(written.server_cert) if ":" in name]
    assert [ipaddress.ip_address(ip) for ip in ips] == [ipaddress.ip_address("::1")]
