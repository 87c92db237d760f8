"""Mutual TLS on every served API, with real daemons on loopback driven by the flwr CLI.

A client without a certificate, or with one of another CA, fails its TLS handshake
(UNAVAILABLE) on each API of the SuperLink (ServerAppIo, Fleet, Exec) and on a SuperNode's
ClientAppIo; one with a certificate of the federation's CA gets through. Runs complete with
every hop on (mutual) TLS, in both isolation modes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from integration_helpers import APPS, Cli
from tls_helpers import TlsMaterial, probe

from corolla.deploy.local import LocalFederation, app_for_federation

pytestmark = pytest.mark.timeout(180)

SERVICES = {
    "serverappio": "corolla.proto.v1.ServerAppIo",
    "fleet": "corolla.proto.v1.Fleet",
    "exec": "corolla.proto.v1.Exec",
    "clientappio": "corolla.proto.v1.ClientAppIo",
}


@pytest.fixture(scope="module")
def mtls_federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    fed = LocalFederation(tmp_path_factory.mktemp("mtls") / "fed", num_nodes=2, mtls=True)
    try:
        fed.start()
        yield fed
    finally:
        fed.stop()


def _address(fed: LocalFederation, api: str) -> str:
    return fed.clientappio_address(0) if api == "clientappio" else str(getattr(fed, api))


@pytest.mark.parametrize("api", sorted(SERVICES))
def test_each_api_accepts_only_a_client_certificate_of_its_ca(
    api: str, mtls_federation: LocalFederation, tls_material: TlsMaterial
) -> None:
    fed = mtls_federation
    assert fed.certs is not None
    address, ca, service = _address(fed, api), fed.certs.ca_cert, SERVICES[api]
    assert probe(address, ca, None, service) == grpc.StatusCode.UNAVAILABLE
    assert probe(address, ca, tls_material.other.client("cli"), service) == (
        grpc.StatusCode.UNAVAILABLE
    )
    # The handshake passed: the server itself answers (UNIMPLEMENTED, or its auth layer).
    accepted = probe(address, ca, fed.client_certificate("cli"), service)
    assert accepted not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_the_daemons_log_what_they_bound_and_how(mtls_federation: LocalFederation) -> None:
    fed = mtls_federation
    assert fed.superlink is not None
    link_log = fed.superlink.output()
    for api in ("serverappio", "fleet", "exec"):
        assert f"{api}={getattr(fed, api)} (mTLS)" in link_log, link_log
    node_log = fed.supernodes[0].output()
    assert f"ClientAppIo API listening on {fed.clientappio_address(0)} (mTLS)" in node_log
    assert f"Fleet API at {fed.fleet} (TLS with a client certificate)" in node_log


def test_a_run_completes_on_mutual_tls(mtls_federation: LocalFederation, tmp_path: Path) -> None:
    """The CLI, the SuperNodes and the app processes the daemons start all present their
    client certificates."""
    settings = mtls_federation.federation_settings()
    assert {"root-certificates", "client-certificate", "client-key"} <= set(settings)
    app = app_for_federation(APPS / "probe", tmp_path / "probe", "", settings=settings)
    cli = Cli(mtls_federation, app)
    result = cli("run", str(app), "local", "--stream")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "probe final=2.0" in result.stdout


def test_the_cli_without_its_certificate_cannot_reach_the_superlink(
    mtls_federation: LocalFederation, tmp_path: Path
) -> None:
    settings = mtls_federation.federation_settings()
    del settings["client-certificate"], settings["client-key"]
    app = app_for_federation(APPS / "probe", tmp_path / "probe", "", settings=settings)
    result = Cli(mtls_federation, app)("ls", str(app), "local")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "cannot reach the SuperLink" in result.stderr


@pytest.mark.parametrize(
    ("mode", "isolation"), [("tls", "subprocess"), ("tls", "process"), ("mtls", "process")]
)
def test_a_run_completes_on_tls_in_each_isolation_mode(
    mode: str, isolation: str, tmp_path: Path
) -> None:
    fed = LocalFederation(
        tmp_path / "fed", num_nodes=2, isolation=isolation, tls=True, mtls=mode == "mtls"
    )
    try:
        fed.start()
        assert fed.superlink is not None
        assert f"fleet={fed.fleet} ({'mTLS' if fed.mtls else 'TLS'})" in fed.superlink.output()
        app = app_for_federation(
            APPS / "probe", tmp_path / "probe", "", settings=fed.federation_settings()
        )
        result = Cli(fed, app)("run", str(app), "local", "--stream")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "probe final=2.0" in result.stdout
    finally:
        fed.stop()
