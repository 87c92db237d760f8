"""Fixtures for every test package: TLS material, made once per test session; the session's
PostgreSQL server (`postgres_server`), its test databases dropped after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import postgres_server
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


@pytest.fixture(scope="session", autouse=True)
def _postgres_session() -> Iterator[None]:
    """Stop the session's PostgreSQL server at the end, if a test started it."""
    try:
        yield
    finally:
        postgres_server.stop_session()


@pytest.fixture(autouse=True)
def _postgres_databases() -> Iterator[None]:
    """Drop the databases a test made with `postgres_server.database_for`."""
    yield
    postgres_server.drop_databases()


@pytest.fixture(scope="session")
def postgres() -> postgres_server.PostgresServer:
    """The session's PostgreSQL server (started now if no test started it yet)."""
    return postgres_server.session_server()
