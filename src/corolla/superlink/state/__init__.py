"""The SuperLink's state: one `LinkState` interface, SQLite behind it by default."""

from __future__ import annotations

from corolla.superlink.state.base import (
    HEARTBEAT_PATIENCE,
    TRANSITIONS,
    AuditEvent,
    IllegalTransition,
    LinkState,
    NodeRecord,
    RunRecord,
    RunStatus,
    StoredMessage,
    SubStatus,
)
from corolla.superlink.state.sqlite import SqliteLinkState


def open_state(database: str) -> LinkState:
    """The state for ``database``: a SQLite file path, or ``":memory:"`` for a throwaway one."""
    return SqliteLinkState(database)


__all__ = [
    "HEARTBEAT_PATIENCE",
    "TRANSITIONS",
    "AuditEvent",
    "IllegalTransition",
    "LinkState",
    "NodeRecord",
    "RunRecord",
    "RunStatus",
    "SqliteLinkState",
    "StoredMessage",
    "SubStatus",
    "open_state",
]
