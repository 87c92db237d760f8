"""Integration fixtures: real daemons on loopback free ports, driven through the flwr CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_helpers import APPS, Cli

from corolla.deploy.local import LocalFederation, app_for_federation


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[LocalFederation]:
    # The e2e suite runs as a deployment should: mutual TLS and SuperNode authentication on.
    fed = LocalFederation(tmp_path / "fed", num_nodes=2, mtls=True, node_auth=True)
    try:
        fed.start()
        yield fed
    finally:
        fed.stop()


@pytest.fixture
def probe_cli(federation: LocalFederation, tmp_path: Path) -> Cli:
    app = app_for_federation(
        APPS / "probe",
        tmp_path / "probe",
        federation.exec,
        settings=federation.federation_settings(),
    )
    return Cli(federation, app)
