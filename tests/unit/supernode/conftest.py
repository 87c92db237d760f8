"""Fixtures for the SuperNode tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from real_superlink import Link
from supernode_fakes import AppProcesses, make_fab

from corolla.supernode.config import SuperNodeConfig
from corolla.supernode.node import SuperNode


@pytest.fixture(autouse=True)
def corolla_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("COROLLA_HOME", str(home))
    return home


@pytest.fixture
def link() -> Iterator[Link]:
    """A real SuperLink in this process (its Fleet API on a free loopback port)."""
    started = Link()
    yield started
    started.stop()


@pytest.fixture
def app_fab(tmp_path: Path) -> tuple[bytes, str]:
    return make_fab(tmp_path / "apps")


@pytest.fixture
def start_node(link: Link) -> Iterator[Callable[..., SuperNode]]:
    nodes: list[SuperNode] = []

    def start(**overrides: Any) -> SuperNode:
        settings: dict[str, Any] = {
            "superlink": link.address,
            "clientappio_address": "127.0.0.1:0",
            "heartbeat_interval": 0.3,
            "max_wait": 1.0,
            "node_config": {"partition-id": 1, "dataset": "mnist"},
        }
        settings.update(overrides)
        node = SuperNode(SuperNodeConfig(**settings))
        node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def app_processes(tmp_path: Path) -> Iterator[AppProcesses]:
    processes = AppProcesses(tmp_path)
    yield processes
    processes.reap()
