"""The SuperLink's state: one `LinkState` interface, SQLite behind it by default, PostgreSQL
for a ``postgresql://`` database (`corolla[postgres]`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from corolla.common.errors import FailedPrecondition, InvalidArgument
from corolla.superlink.state.base import (
    HEARTBEAT_PATIENCE,
    TRANSITIONS,
    AuditEvent,
    IllegalTransition,
    LinkState,
    NodeRecord,
    RunRecord,
    RunStatus,
    StateLimits,
    StoredMessage,
    SubStatus,
)
from corolla.superlink.state.sqlite import SqliteLinkState

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(database: str) -> bool:
    """Whether ``database`` names a PostgreSQL database (else it is an SQLite file)."""
    return database.startswith(POSTGRES_SCHEMES)


def open_state(
    database: str, *, object_dir: Path | None = None, limits: StateLimits | None = None
) -> LinkState:
    """The state for ``database``: a ``postgresql://`` URL (objects as files in
    ``object_dir``, which it needs), an SQLite file path, or ``":memory:"`` for a throwaway
    one. `FailedPrecondition` if PostgreSQL's driver is not installed; `Unavailable` if the
    server cannot be reached."""
    if not is_postgres_url(database):
        return SqliteLinkState(database, limits=limits)
    if importlib.util.find_spec("psycopg") is None:
        raise FailedPrecondition(
            "a PostgreSQL --database needs the driver psycopg: pip install 'corolla[postgres]'"
        )
    if object_dir is None:
        raise InvalidArgument("a PostgreSQL state needs a directory for its objects")
    from corolla.superlink.state.postgres import PostgresLinkState  # psycopg: imported now

    return PostgresLinkState(database, object_dir, limits=limits)


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
    "is_postgres_url",
    "open_state",
]
