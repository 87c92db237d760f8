"""The client certificate options of `flwr-serverapp` and `flwr-clientapp`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from tls_helpers import TlsMaterial

from corolla.common.appio import SECRET_ENV, TOKEN_ENV
from corolla.common.config import UsageError
from corolla.runtime.config import parse_clientapp_config, parse_serverapp_config

pytestmark = pytest.mark.timeout(60)
SECRET = "a-secret-of-enough-length"
PARSERS = [parse_serverapp_config, parse_clientapp_config]
Parse = Callable[..., Any]


@pytest.mark.parametrize("parse", PARSERS)
def test_a_client_certificate_by_path(parse: Parse, tls_material: TlsMaterial) -> None:
    certs = tls_material.trusted
    pair = certs.client("serverapp")
    argv = [
        "--root-certificates",
        str(certs.ca_cert),
        "--ssl-client-certfile",
        str(pair.cert),
        "--ssl-client-keyfile",
        str(pair.key),
    ]
    config = parse(argv, environ={TOKEN_ENV: "t"})
    assert config.client_tls is not None
    assert config.client_tls.certificate_chain == pair.cert.read_bytes()
    assert config.client_tls.private_key == pair.key.read_bytes()
    assert "PRIVATE" not in repr(config)
    without = parse(["--root-certificates", str(certs.ca_cert)], environ={TOKEN_ENV: "t"})
    assert without.client_tls is None


@pytest.mark.parametrize("parse", PARSERS)
def test_an_operator_gives_them_by_environment(
    parse: Parse, tls_material: TlsMaterial, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = tls_material.trusted
    pair = certs.client("clientapp")
    monkeypatch.setenv(SECRET_ENV, SECRET)  # isolation process: an operator's process
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    environ = {
        "COROLLA_ROOT_CERTIFICATES": str(certs.ca_cert),
        "COROLLA_SSL_CLIENT_CERTFILE": str(pair.cert),
        "COROLLA_SSL_CLIENT_KEYFILE": str(pair.key),
    }
    config = parse([], environ=environ)
    assert config.client_tls is not None


@pytest.mark.parametrize("parse", PARSERS)
def test_a_daemon_child_ignores_the_daemons_own_client_certificate(
    parse: Parse, tls_material: TlsMaterial
) -> None:
    """A SuperNode's COROLLA_SSL_CLIENT_* (its Fleet identity) reach its children with its
    environment; they take only what the daemon passes them as options."""
    certs = tls_material.trusted
    node = certs.client("supernode")
    environ = {
        TOKEN_ENV: "t",
        "COROLLA_SSL_CLIENT_CERTFILE": str(node.cert),
        "COROLLA_SSL_CLIENT_KEYFILE": str(node.key),
    }
    config = parse(["--root-certificates", str(certs.ca_cert)], environ=environ)
    assert config.client_tls is None


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--insecure", "--ssl-client-certfile", "{cert}"], "--insecure means no TLS"),
        (["--root-certificates", "{ca}", "--ssl-client-certfile", "{cert}"], "give both"),
        (["--root-certificates", "{ca}", "--ssl-client-keyfile", "{key}"], "give both"),
        (
            [
                "--root-certificates",
                "{ca}",
                "--ssl-client-certfile",
                "{cert}",
                "--ssl-client-keyfile",
                "{other_key}",
            ],
            "does not belong to",
        ),
    ],
)
def test_usage_errors(
    parse: Parse, extra: list[str], needle: str, tls_material: TlsMaterial
) -> None:
    certs = tls_material.trusted
    names = {
        "ca": str(certs.ca_cert),
        "cert": str(certs.client("clientapp").cert),
        "key": str(certs.client("clientapp").key),
        "other_key": str(certs.client("cli").key),
    }
    with pytest.raises(UsageError, match=needle):
        parse([arg.format(**names) for arg in extra], environ={TOKEN_ENV: "t"})
