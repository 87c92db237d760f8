"""Fixtures of the compat suite: one real local federation shared by its federation tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from compat_helpers import NUM_NODES

from corolla.deploy.local import LocalFederation


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    """A SuperLink and NUM_NODES SuperNodes on loopback, with mutual TLS and SuperNode
    authentication on, as a deployment should run. Runs of different tests share it: each
    app waits for its nodes and finishes its run, so one run does not disturb the next."""
    fed = LocalFederation(
        tmp_path_factory.mktemp("compat-federation"),
        num_nodes=NUM_NODES,
        mtls=True,
        node_auth=True,
    )
    try:
        fed.start()
        yield fed
    finally:
        fed.stop()
