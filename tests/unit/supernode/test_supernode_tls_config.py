"""`flower-supernode` TLS options: its client certificate, mutual TLS on ClientAppIo, loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from tls_helpers import TlsMaterial

from corolla.common.tls import AppTls
from corolla.supernode.config import UsageError, parse_args
from corolla.supernode.main import main

pytestmark = pytest.mark.timeout(60)


def _tls(material: TlsMaterial, *extra: str) -> list[str]:
    certs = material.trusted
    return [
        "--root-certificates",
        str(certs.ca_cert),
        "--ssl-certfile",
        str(certs.server_cert),
        "--ssl-keyfile",
        str(certs.server_key),
        *extra,
    ]


def _mutual(material: TlsMaterial) -> list[str]:
    certs = material.trusted
    node, app = certs.client("supernode"), certs.client("clientapp")
    return [
        "--ssl-ca-certfile",
        str(certs.ca_cert),
        "--require-client-certificate",
        "--ssl-client-certfile",
        str(node.cert),
        "--ssl-client-keyfile",
        str(node.key),
        "--app-client-certfile",
        str(app.cert),
        "--app-client-keyfile",
        str(app.key),
    ]


def test_mutual_tls_everywhere(tls_material: TlsMaterial) -> None:
    certs = tls_material.trusted
    config = parse_args(_tls(tls_material, *_mutual(tls_material)), environ={})
    node, app = certs.client("supernode"), certs.client("clientapp")
    assert config.client_tls is not None
    assert config.client_tls.certificate_chain == node.cert.read_bytes()
    assert config.clientappio_tls is not None and config.clientappio_tls.mutual
    assert config.app_tls == AppTls(certs.ca_cert, app.cert, app.key)
    assert config.clientappio_address == "0.0.0.0:9094"  # TLS: all interfaces, as before
    assert "PRIVATE" not in repr(config)


def test_a_client_certificate_alone_for_the_fleet_connection(tls_material: TlsMaterial) -> None:
    node = tls_material.trusted.client("supernode")
    config = parse_args(
        _tls(
            tls_material,
            "--ssl-client-certfile",
            str(node.cert),
            "--ssl-client-keyfile",
            str(node.key),
        ),
        environ={},
    )
    assert config.client_tls is not None
    assert config.clientappio_tls is not None and not config.clientappio_tls.mutual
    assert config.app_tls is None  # plain TLS: its children use a loopback port, as before


def test_options_from_the_environment(tls_material: TlsMaterial) -> None:
    certs = tls_material.trusted
    node = certs.client("supernode")
    environ = {
        "COROLLA_SSL_CLIENT_CERTFILE": str(node.cert),
        "COROLLA_SSL_CLIENT_KEYFILE": str(node.key),
        "COROLLA_SSL_CA_CERTFILE": str(certs.ca_cert),
        "COROLLA_REQUIRE_CLIENT_CERTIFICATE": "on",
    }
    with pytest.raises(UsageError, match="needs --app-client-certfile"):
        parse_args(_tls(tls_material), environ=environ)
    app = certs.client("clientapp")
    environ |= {
        "COROLLA_APP_CLIENT_CERTFILE": str(app.cert),
        "COROLLA_APP_CLIENT_KEYFILE": str(app.key),
    }
    config = parse_args(_tls(tls_material), environ=environ)
    assert config.client_tls is not None and config.app_tls is not None


def test_process_isolation_needs_no_app_certificate(
    tls_material: TlsMaterial, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("a-long-enough-secret-value\n")
    certs = tls_material.trusted
    argv = _tls(
        tls_material,
        "--ssl-ca-certfile",
        str(certs.ca_cert),
        "--require-client-certificate",
        "--isolation",
        "process",
        "--appio-secret-file",
        str(secret),
    )
    config = parse_args(argv, environ={})
    assert config.clientappio_tls is not None and config.clientappio_tls.mutual
    assert config.app_tls is None


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--require-client-certificate"], "--require-client-certificate needs --ssl-ca-certfile"),
        (["--ssl-client-certfile", "{node_cert}"], "give both --ssl-client-certfile and"),
        (["--ssl-client-keyfile", "{node_key}"], "give both --ssl-client-certfile and"),
        (
            ["--ssl-client-certfile", "{node_cert}", "--ssl-client-keyfile", "{app_key}"],
            "does not belong to",
        ),
        (["--ssl-client-certfile", "/nope.pem", "--ssl-client-keyfile", "{node_key}"], "/nope"),
    ],
)
def test_usage_errors(
    extra: list[str],
    needle: str,
    tls_material: TlsMaterial,
    capsys: pytest.CaptureFixture[str],
) -> None:
    certs = tls_material.trusted
    names = {
        "node_cert": str(certs.client("supernode").cert),
        "node_key": str(certs.client("supernode").key),
        "app_key": str(certs.client("clientapp").key),
    }
    argv = _tls(tls_material, *(arg.format(**names) for arg in extra))
    with pytest.raises(UsageError, match=needle):
        parse_args(argv, environ={})
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "flag",
    [
        "--ssl-ca-certfile",
        "--ssl-client-certfile",
        "--ssl-client-keyfile",
        "--app-client-certfile",
        "--app-client-keyfile",
    ],
)
def test_insecure_refuses_tls_material(flag: str) -> None:
    with pytest.raises(UsageError, match=f"--insecure means no TLS; drop {flag}"):
        parse_args(["--insecure", flag, "x.pem"], environ={})
    with pytest.raises(UsageError, match="drop --require-client-certificate"):
        parse_args(["--insecure", "--require-client-certificate"], environ={})


def test_insecure_serves_clientappio_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    assert parse_args(["--insecure"], environ={}).clientappio_address == "127.0.0.1:9094"
    explicit = ["--insecure", "--clientappio-api-address", "0.0.0.0:9094"]
    assert parse_args(explicit, environ={}).clientappio_address == "0.0.0.0:9094"
    environ = {"COROLLA_CLIENTAPPIO_API_ADDRESS": "0.0.0.0:9999"}
    assert parse_args(["--insecure"], environ=environ).clientappio_address == "0.0.0.0:9999"
    file = tmp_path / "c.toml"
    file.write_text('[supernode]\ninsecure = true\nclientappio-api-address = "0.0.0.0:9094"\n')
    assert parse_args(["--config", str(file)], environ={}).clientappio_address == "0.0.0.0:9094"
