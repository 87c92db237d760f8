"""Fixtures for every test package: TLS material, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from tls_helpers import CLIENTS, TlsMaterial

from corolla.deploy.certs import generate


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    root: Path = tmp_path_factory.mktemp("tls")
    return TlsMaterial(
        trusted=generate(root / "trusted", clients=CLIENTS),
        other=generate(root / "other", clients=CLIENTS),
    )
