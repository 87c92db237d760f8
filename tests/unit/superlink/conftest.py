"""Fixtures of the SuperLink unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bounded_state import Make

from corolla.superlink.state import SqliteLinkState
from corolla.superlink.state.base import LinkState, StateLimits


@pytest.fixture(params=["memory", "file"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """``make(**limits)``: a new state with those `StateLimits`, closed after the test."""
    opened: list[SqliteLinkState] = []

    def open_state(**limits: int) -> SqliteLinkState:
        database = ":memory:" if request.param == "memory" else tmp_path / "state.db"
        state = SqliteLinkState(database, limits=StateLimits(**limits))
        opened.append(state)
        return state

    yield open_state
    for state in opened:
        state.close()


@pytest.fixture
def state() -> Iterator[LinkState]:
    """A fresh in-memory state for tests of one component on top of it."""
    db = SqliteLinkState(":memory:")
    yield db
    db.close()
