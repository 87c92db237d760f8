"""PostgreSQL schema of the SuperLink state: the tables of `_schema` in PostgreSQL's types,
created and versioned on open.

The differences that matter to the shared SQL: ``messages.rowid`` is a column here (insertion
order, as SQLite's implicit rowid), ``object_ids`` are ``json`` (read back as text, see `_pg`),
objects are always files (``data`` stays empty), and a unique index makes a second reply to
one instruction impossible whatever the transactions do.
"""

from __future__ import annotations

import psycopg

from corolla.common.errors import FailedPrecondition
from corolla.superlink.state._pg import lock_key
from corolla.superlink.state._schema import tables

# Its own line of versions (SQLite's is `_schema.SCHEMA_VERSION`): 1 is SQLite's version 7.
SCHEMA_VERSION = 1

_TYPES = {
    "int": "BIGINT",
    "real": "DOUBLE PRECISION",
    "blob": "BYTEA",
    "json": "JSON",
    "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "rowid": "\n    rowid BIGINT GENERATED ALWAYS AS IDENTITY,",
}
# A second reply to one instruction cannot be stored, whatever the transactions do.
_ONE_REPLY = """
CREATE UNIQUE INDEX IF NOT EXISTS messages_one_reply ON messages (reply_to_message_id)
    WHERE reply_to_message_id <> ''
"""


def prepare(conn: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    """Create the tables if they are missing and bring the schema to `SCHEMA_VERSION`; one
    process at a time. `FailedPrecondition` for a schema newer than this Corolla's."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("schema"),))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        found = None if row is None else row[0]
        if isinstance(found, int) and found > SCHEMA_VERSION:
            raise FailedPrecondition(
                f"state database {name} has schema version {found}, newer than the "
                f"PostgreSQL version {SCHEMA_VERSION} this Corolla supports; upgrade Corolla"
            )
        if found != SCHEMA_VERSION:
            conn.execute(tables(_TYPES) + _ONE_REPLY)  # no parameters: one round trip
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
