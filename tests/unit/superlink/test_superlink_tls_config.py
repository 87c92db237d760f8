"""`flower-superlink` TLS options: mutual TLS, the app processes' material, loopback defaults."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tls_helpers import TlsMaterial

from corolla.common.config import UsageError
from corolla.common.tls import AppTls
from corolla.superlink.config import parse_config
from corolla.superlink.main import main

pytestmark = pytest.mark.timeout(60)
APIS = ("serverappio-api-address", "fleet-api-address", "exec-api-address")


def _tls(certs: Path, *extra: str) -> list[str]:
    return [
        "--ssl-certfile",
        str(certs / "server.pem"),
        "--ssl-keyfile",
        str(certs / "server.key"),
        *extra,
    ]


def test_mutual_tls_with_the_app_processes_client_certificate(tls_material: TlsMaterial) -> None:
    certs = tls_material.trusted
    app = certs.client("serverapp")
    argv = _tls(
        certs.ca_cert.parent,
        "--ssl-ca-certfile",
        str(certs.ca_cert),
        "--require-client-certificate",
        "--app-client-certfile",
        str(app.cert),
        "--app-client-keyfile",
        str(app.key),
    )
    config = parse_config(argv, environ={})
    assert config.tls is not None and config.tls.mutual
    assert config.tls.client_ca == certs.ca_cert.read_bytes()
    assert config.app_tls == AppTls(certs.ca_cert, app.cert, app.key)
    # TLS binds every API on all interfaces by default, as before.
    addresses = (config.serverappio_address, config.fleet_address, config.exec_address)
    assert addresses == ("0.0.0.0:9091", "0.0.0.0:9092", "0.0.0.0:9093")


def test_the_ca_alone_keeps_its_meaning_and_asks_for_no_client_certificate(
    tls_material: TlsMaterial,
) -> None:
    certs = tls_material.trusted
    config = parse_config(
        _tls(certs.ca_cert.parent, "--ssl-ca-certfile", str(certs.ca_cert)), environ={}
    )
    assert config.tls is not None and not config.tls.mutual
    assert config.app_tls == AppTls(certs.ca_cert)
    # Without a CA the app processes trust the (self-signed) server certificate itself.
    config = parse_config(_tls(certs.ca_cert.parent), environ={})
    assert config.app_tls == AppTls(certs.server_cert)


def test_switch_from_the_environment_and_process_isolation_needs_no_app_certificate(
    tls_material: TlsMaterial, tmp_path: Path
) -> None:
    certs = tls_material.trusted
    secret = tmp_path / "secret"
    secret.write_text("s" * 40)
    argv = _tls(
        certs.ca_cert.parent,
        "--isolation",
        "process",
        "--appio-secret-file",
        str(secret),
    )
    environ = {
        "COROLLA_REQUIRE_CLIENT_CERTIFICATE": "yes",
        "COROLLA_SSL_CA_CERTFILE": str(certs.ca_cert),
    }
    config = parse_config(argv, environ=environ)
    assert config.tls is not None and config.tls.mutual
    assert config.app_tls == AppTls(certs.ca_cert)


@pytest.mark.parametrize(
    ("extra", "environ", "needle"),
    [
        (["--require-client-certificate"], {}, "--require-client-certificate needs --ssl-ca"),
        (
            [],
            {"COROLLA_REQUIRE_CLIENT_CERTIFICATE": "1"},
            "COROLLA_REQUIRE_CLIENT_CERTIFICATE needs --ssl-ca-certfile",
        ),
        (
            ["--require-client-certificate", "--ssl-ca-certfile", "{ca}"],
            {},
            "needs --app-client-certfile and --app-client-keyfile",
        ),
        (
            [
                "--require-client-certificate",
                "--ssl-ca-certfile",
                "{ca}",
                "--app-client-certfile",
                "{app_cert}",
            ],
            {},
            "give both --app-client-certfile and --app-client-keyfile, or neither",
        ),
        (
            [
                "--require-client-certificate",
                "--ssl-ca-certfile",
                "{ca}",
                "--app-client-certfile",
                "{server_cert}",
                "--app-client-keyfile",
                "{server_key}",
            ],
            {},
            "not for client authentication",
        ),
    ],
)
def test_mutual_tls_usage_errors(
    extra: list[str],
    environ: dict[str, str],
    needle: str,
    tls_material: TlsMaterial,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    certs = tls_material.trusted
    app = certs.client("serverapp")
    names = {
        "ca": str(certs.ca_cert),
        "app_cert": str(app.cert),
        "server_cert": str(certs.server_cert),
        "server_key": str(certs.server_key),
    }
    argv = _tls(certs.ca_cert.parent, *(arg.format(**names) for arg in extra))
    with pytest.raises(UsageError, match=needle):
        parse_config(argv, environ=environ)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("flower-superlink: ") and needle in err and err.count("\n") == 1


def test_insecure_and_mutual_tls_exclude_each_other() -> None:
    with pytest.raises(UsageError, match="exclude each other"):
        parse_config(["--insecure", "--require-client-certificate"], environ={})


def test_insecure_binds_to_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    config = parse_config(["--insecure"], environ={})
    assert (config.serverappio_address, config.fleet_address, config.exec_address) == (
        "127.0.0.1:9091",
        "127.0.0.1:9092",
        "127.0.0.1:9093",
    )
    # An explicit address wins, by flag, environment or config file; the others stay local.
    config = parse_config(["--insecure", "--fleet-api-address", "0.0.0.0:9092"], environ={})
    assert (config.fleet_address, config.exec_address) == ("0.0.0.0:9092", "127.0.0.1:9093")
    config = parse_config(["--insecure"], environ={"COROLLA_EXEC_API_ADDRESS": "0.0.0.0:7"})
    assert (config.exec_address, config.fleet_address) == ("0.0.0.0:7", "127.0.0.1:9092")
    file = tmp_path / "corolla.toml"
    file.write_text('[superlink]\ninsecure = true\nserverappio-api-address = "0.0.0.0:9091"\n')
    config = parse_config(["--config", str(file)], environ={})
    assert (config.serverappio_address, config.fleet_address) == ("0.0.0.0:9091", "127.0.0.1:9092")


SOURCES = st.sampled_from(["default", "flag", "env", "file"])


@settings(max_examples=40, deadline=None)
@given(
    insecure_from=st.sampled_from(["flag", "env", "file"]),
    sources=st.tuples(SOURCES, SOURCES, SOURCES),
    ports=st.tuples(*(st.integers(0, 65535) for _ in APIS)),
)
def test_only_a_default_address_becomes_loopback(
    insecure_from: str, sources: tuple[str, str, str], ports: tuple[int, int, int]
) -> None:
    argv: list[str] = ["--insecure"] if insecure_from == "flag" else []
    environ = {"COROLLA_INSECURE": "true"} if insecure_from == "env" else {}
    lines = ["[superlink]"] + (["insecure = true"] if insecure_from == "file" else [])
    for api, source, port in zip(APIS, sources, ports, strict=True):
        value = f"0.0.0.0:{port}"
        if source == "flag":
            argv += [f"--{api}", value]
        elif source == "env":
            environ["COROLLA_" + api.upper().replace("-", "_")] = value
        elif source == "file":
            lines.append(f'{api} = "{value}"')
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "c.toml"
        file.write_text("\n".join(lines) + "\n")
        config = parse_config([*argv, "--config", str(file)], environ=environ)
    bound = (config.serverappio_address, config.fleet_address, config.exec_address)
    for address, source, port, default in zip(
        bound, sources, ports, (9091, 9092, 9093), strict=True
    ):
        expected = f"127.0.0.1:{default}" if source == "default" else f"0.0.0.0:{port}"
        assert address == expected
