"""PostgreSQL schema of the SuperLink state: the tables of `_schema` (SQLite's) in PostgreSQL's
types, created and versioned on open.

The differences that matter to the shared SQL: ``messages.rowid`` is a column here (insertion
order, as SQLite's implicit rowid), ``object_ids`` are ``json`` (read back as text, see `_pg`),
``audit."user"`` is quoted (a keyword), objects are always files (``data`` stays empty), and a
unique index makes a second reply to one instruction impossible whatever the transactions do.
"""

from __future__ import annotations

import psycopg

from corolla.common.errors import FailedPrecondition

# Its own line of versions (SQLite's is `_schema.SCHEMA_VERSION`): 1 is SQLite's version 7.
SCHEMA_VERSION = 1
_SETUP_LOCK = 0x436F726F6C6C61  # advisory lock of the schema setup: one process at a time

_TABLES = """
CREATE TABLE IF NOT EXISTS runs (
    run_id             BIGINT PRIMARY KEY,
    seq                BIGINT NOT NULL UNIQUE,
    fab_id             TEXT NOT NULL,
    fab_version        TEXT NOT NULL,
    fab_hash           TEXT NOT NULL,
    override_config    TEXT NOT NULL,
    run_config         TEXT NOT NULL,
    federation         TEXT NOT NULL,
    owner              TEXT NOT NULL,
    status             TEXT NOT NULL,
    sub_status         TEXT NOT NULL,
    details            TEXT NOT NULL,
    pending_at         DOUBLE PRECISION NOT NULL,
    starting_at        DOUBLE PRECISION NOT NULL,
    running_at         DOUBLE PRECISION NOT NULL,
    finished_at        DOUBLE PRECISION NOT NULL,
    federation_options TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_active ON runs (seq) WHERE status <> 'finished';
CREATE TABLE IF NOT EXISTS fabs (
    fab_hash TEXT PRIMARY KEY,
    content  BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    node_id            BIGINT PRIMARY KEY,
    heartbeat_interval DOUBLE PRECISION NOT NULL,
    online_until       DOUBLE PRECISION NOT NULL,
    registered_at      DOUBLE PRECISION NOT NULL,
    last_seen          DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS node_keys (
    node_id       BIGINT PRIMARY KEY,
    public_key    BYTEA NOT NULL UNIQUE,
    fingerprint   TEXT NOT NULL UNIQUE,
    registered_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS node_runs (
    node_id BIGINT NOT NULL,
    run_id  BIGINT NOT NULL,
    PRIMARY KEY (node_id, run_id)
);
CREATE TABLE IF NOT EXISTS messages (
    message_id          TEXT PRIMARY KEY,
    run_id              BIGINT NOT NULL REFERENCES runs (run_id),
    src_node_id         BIGINT NOT NULL,
    dst_node_id         BIGINT NOT NULL,
    reply_to_message_id TEXT NOT NULL,
    message_type        TEXT NOT NULL,
    created_at          DOUBLE PRECISION NOT NULL,
    ttl                 DOUBLE PRECISION NOT NULL,
    payload             BYTEA NOT NULL,
    object_ids          JSON NOT NULL,
    delivered           SMALLINT NOT NULL DEFAULT 0,
    rowid               BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX IF NOT EXISTS messages_dst_delivered ON messages (dst_node_id, delivered);
CREATE INDEX IF NOT EXISTS messages_run ON messages (run_id);
CREATE INDEX IF NOT EXISTS messages_reply_to ON messages (reply_to_message_id);
CREATE UNIQUE INDEX IF NOT EXISTS messages_one_reply ON messages (reply_to_message_id)
    WHERE reply_to_message_id <> '';
CREATE TABLE IF NOT EXISTS answered (
    instruction_id TEXT PRIMARY KEY,
    reply_id       TEXT NOT NULL,
    run_id         BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS answered_run ON answered (run_id);
CREATE TABLE IF NOT EXISTS objects (
    object_id TEXT PRIMARY KEY,
    run_id    BIGINT NOT NULL,
    size      BIGINT NOT NULL,
    data      BYTEA NOT NULL DEFAULT '',
    in_file   SMALLINT NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS objects_run ON objects (run_id);
CREATE TABLE IF NOT EXISTS object_refs (
    object_id TEXT NOT NULL,
    run_id    BIGINT NOT NULL,
    PRIMARY KEY (object_id, run_id)
);
CREATE INDEX IF NOT EXISTS object_refs_run ON object_refs (run_id);
CREATE TABLE IF NOT EXISTS contexts (
    run_id  BIGINT PRIMARY KEY REFERENCES runs (run_id),
    context BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
    run_id BIGINT NOT NULL REFERENCES runs (run_id),
    idx    BIGINT NOT NULL,
    line   TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE IF NOT EXISTS tokens (
    token_sha256 TEXT PRIMARY KEY,
    run_id       BIGINT NOT NULL REFERENCES runs (run_id),
    created_at   DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_run ON tokens (run_id);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id       BIGINT PRIMARY KEY REFERENCES runs (run_id),
    server_round BIGINT NOT NULL,
    payload      BYTEA NOT NULL,
    object_ids   JSON NOT NULL,
    saved_at     DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    event_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       DOUBLE PRECISION NOT NULL,
    "user"   TEXT NOT NULL,
    action   TEXT NOT NULL,
    run_id   BIGINT NOT NULL,
    allowed  SMALLINT NOT NULL,
    reason   TEXT NOT NULL,
    peer     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_user ON audit ("user", event_id);
CREATE INDEX IF NOT EXISTS audit_run ON audit (run_id, event_id);
CREATE TABLE IF NOT EXISTS run_usage (
    run_id        BIGINT PRIMARY KEY REFERENCES runs (run_id),
    object_bytes  BIGINT NOT NULL DEFAULT 0,
    log_bytes     BIGINT NOT NULL DEFAULT 0,
    log_first     BIGINT NOT NULL DEFAULT 0,
    dropped_lines BIGINT NOT NULL DEFAULT 0,
    dropped_bytes BIGINT NOT NULL DEFAULT 0
)
"""


def prepare(conn: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    """Create the tables if they are missing and bring the schema to `SCHEMA_VERSION`; one
    process at a time. `FailedPrecondition` for a schema newer than this Corolla's."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        found = None if row is None else row[0]
        if isinstance(found, int) and found > SCHEMA_VERSION:
            raise FailedPrecondition(
                f"state database {name} has schema version {found}, newer than the "
                f"PostgreSQL version {SCHEMA_VERSION} this Corolla supports; upgrade Corolla"
            )
        if found != SCHEMA_VERSION:
            conn.execute(_TABLES)  # several statements, no parameters: one round trip
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
