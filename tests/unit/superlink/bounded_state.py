"""Shared by the state-bounds tests (their `make` fixture is in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

from corolla.superlink.state import LinkState, SqliteLinkState

Make = Callable[..., SqliteLinkState]


def new_run(state: LinkState) -> int:
    return state.create_run(
        fab_id="acme/demo", fab_version="1", fab_hash="h", override_config={}, run_config={}
    )
