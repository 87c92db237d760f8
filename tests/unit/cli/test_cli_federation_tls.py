"""A federation's client certificate for mutual TLS: ``client-certificate`` and ``client-key``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tls_helpers import TlsMaterial

from corolla.cli.config import resolve_federation
from corolla.common.errors import InvalidArgument
from corolla.fab import AppConfig, FederationConfig, FederationsConfig


def _app(options: dict[str, object], insecure: bool = False) -> AppConfig:
    federations = FederationsConfig(
        default="remote",
        federations={
            "remote": FederationConfig(
                "remote", address="link.example:9093", insecure=insecure, options=options
            )
        },
    )
    return AppConfig(
        name="app",
        version="1.0.0",
        publisher="acme",
        serverapp="pkg.server:app",
        clientapp="pkg.client:app",
        run_config={},
        federations=federations,
    )


@pytest.fixture
def app_dir(tmp_path: Path, tls_material: TlsMaterial) -> Path:
    """An app directory with the CLI's certificates in ``certs/`` beside its pyproject."""
    certs = tls_material.trusted
    (tmp_path / "certs").mkdir()
    cli = certs.client("cli")
    for source in (certs.ca_cert, cli.cert, cli.key):
        shutil.copy(source, tmp_path / "certs" / source.name)
    return tmp_path


def test_paths_are_relative_to_the_app_directory(app_dir: Path, tls_material: TlsMaterial) -> None:
    options = {
        "root-certificates": "certs/ca.pem",
        "client-certificate": "certs/cli.pem",
        "client-key": "certs/cli.key",
        "num-supernodes": 2,
    }
    fed = resolve_federation(_app(options), None, app_dir)
    assert fed.root_certificates == tls_material.trusted.ca_cert.read_bytes()
    assert fed.client_tls is not None
    assert fed.client_tls.certificate_chain == (app_dir / "certs" / "cli.pem").read_bytes()
    assert fed.options == {"num-supernodes": 2}  # the TLS keys are not run options
    assert "PRIVATE" not in repr(fed)


def test_absolute_paths_work_too(app_dir: Path, tls_material: TlsMaterial) -> None:
    cli = tls_material.trusted.client("cli")
    options = {"client-certificate": str(cli.cert), "client-key": str(cli.key)}
    fed = resolve_federation(_app(options), None, app_dir / "elsewhere")
    assert fed.client_tls is not None and fed.root_certificates is None  # system roots


@pytest.mark.parametrize(
    ("options", "insecure", "needle"),
    [
        ({"client-certificate": "certs/cli.pem"}, False, "must both be file paths"),
        ({"client-key": "certs/cli.key"}, False, "must both be file paths"),
        ({"client-certificate": 3, "client-key": "certs/cli.key"}, False, "must both be file"),
        (
            {"client-certificate": "certs/cli.pem", "client-key": "certs/cli.key"},
            True,
            "'insecure = true' and 'client-certificate'/'client-key' conflict",
        ),
        (
            {"client-certificate": "certs/cli.pem", "client-key": "certs/ca.pem"},
            False,
            "federation 'remote': ",
        ),
        (
            {"client-certificate": "certs/nope.pem", "client-key": "certs/cli.key"},
            False,
            "cannot read the client certificate",
        ),
    ],
)
def test_refused_settings(
    options: dict[str, object], insecure: bool, needle: str, app_dir: Path
) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        resolve_federation(_app(options, insecure), None, app_dir)
