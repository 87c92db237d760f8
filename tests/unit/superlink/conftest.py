"""Fixtures of the SuperLink unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bounded_state import Make
from postgres_server import database_for

from corolla.superlink.state import SqliteLinkState
from corolla.superlink.state.base import LinkState, StateLimits
from corolla.superlink.state.postgres import PostgresLinkState


def _opener(kind: str, tmp_path: Path) -> Iterator[Callable[..., LinkState]]:
    opened: list[LinkState] = []

    def open_state(**limits: int) -> LinkState:
        bounds = StateLimits(**limits)
        state: LinkState
        if kind == "postgres":
            state = PostgresLinkState(database_for(tmp_path), tmp_path / "objects", limits=bounds)
        else:
            database = ":memory:" if kind == "memory" else tmp_path / "state.db"
            state = SqliteLinkState(database, limits=bounds)
        opened.append(state)
        return state

    yield open_state
    for state in opened:
        state.close()


@pytest.fixture(params=["memory", "file"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """``make(**limits)``: a new SQLite state with those `StateLimits`, closed after the
    test."""
    yield from _opener(request.param, tmp_path)  # type: ignore[misc]  # SqliteLinkStates


@pytest.fixture(params=["memory", "file", "postgres"])
def make_any(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., LinkState]]:
    """`make`, of every backend (PostgreSQL: a database of the session's server)."""
    yield from _opener(request.param, tmp_path)


@pytest.fixture
def state() -> Iterator[LinkState]:
    """A fresh in-memory state for tests of one component on top of it."""
    db = SqliteLinkState(":memory:")
    yield db
    db.close()
