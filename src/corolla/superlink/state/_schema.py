"""SQLite schema of the SuperLink state: opening and versioning (`_pgschema` is PostgreSQL's)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path

from corolla.common.errors import FailedPrecondition

SCHEMA_VERSION = 7  # 2: objects.in_file (payload in a file beside the database); 3: checkpoints;
# 4: node_keys (SuperNode authentication allow-list), node_runs (runs a node serves),
# nodes.last_seen; 5: audit (the Exec audit trail); 6: runs.federation_options; 7: answered
# (replies the ServerApp took: a retried push of one is no error), messages.delivered 2 (acked)
MEMORY = ":memory:"

# The tables in the types of each backend (`tables`): SQLite's below, PostgreSQL's in
# `_pgschema`. ``{rowid}``: a column PostgreSQL needs for what is SQLite's implicit rowid.
TABLES = """
CREATE TABLE IF NOT EXISTS runs (
    run_id          {int} PRIMARY KEY,
    seq             {int} NOT NULL UNIQUE,
    fab_id          TEXT NOT NULL,
    fab_version     TEXT NOT NULL,
    fab_hash        TEXT NOT NULL,
    override_config TEXT NOT NULL,
    run_config      TEXT NOT NULL,
    federation      TEXT NOT NULL,
    owner           TEXT NOT NULL,
    status          TEXT NOT NULL,
    sub_status      TEXT NOT NULL,
    details         TEXT NOT NULL,
    pending_at      {real} NOT NULL,
    starting_at     {real} NOT NULL,
    running_at      {real} NOT NULL,
    finished_at     {real} NOT NULL,
    federation_options TEXT NOT NULL DEFAULT '{{}}'
);
CREATE TABLE IF NOT EXISTS fabs (
    fab_hash TEXT PRIMARY KEY,
    content  {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    node_id            {int} PRIMARY KEY,
    heartbeat_interval {real} NOT NULL,
    online_until       {real} NOT NULL,
    registered_at      {real} NOT NULL,
    last_seen          {real} NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS node_keys (
    node_id       {int} PRIMARY KEY,
    public_key    {blob} NOT NULL UNIQUE,
    fingerprint   TEXT NOT NULL UNIQUE,
    registered_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS node_runs (
    node_id {int} NOT NULL,
    run_id  {int} NOT NULL,
    PRIMARY KEY (node_id, run_id)
);
CREATE TABLE IF NOT EXISTS messages ({rowid}
    message_id          TEXT PRIMARY KEY,
    run_id              {int} NOT NULL REFERENCES runs (run_id),
    src_node_id         {int} NOT NULL,
    dst_node_id         {int} NOT NULL,
    reply_to_message_id TEXT NOT NULL,
    message_type        TEXT NOT NULL,
    created_at          {real} NOT NULL,
    ttl                 {real} NOT NULL,
    payload             {blob} NOT NULL,
    object_ids          {json} NOT NULL,
    delivered           {int} NOT NULL DEFAULT 0  -- instructions: UNDELIVERED, ...
);
CREATE INDEX IF NOT EXISTS messages_dst_delivered ON messages (dst_node_id, delivered);
CREATE INDEX IF NOT EXISTS messages_run ON messages (run_id);
CREATE INDEX IF NOT EXISTS messages_reply_to ON messages (reply_to_message_id);
CREATE TABLE IF NOT EXISTS answered (
    instruction_id TEXT PRIMARY KEY,
    reply_id       TEXT NOT NULL,
    run_id         {int} NOT NULL
);
CREATE INDEX IF NOT EXISTS answered_run ON answered (run_id);
CREATE TABLE IF NOT EXISTS objects (
    object_id TEXT PRIMARY KEY,
    run_id    {int} NOT NULL,
    size      {int} NOT NULL,
    data      {blob} NOT NULL,
    in_file   {int} NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS objects_run ON objects (run_id);
CREATE TABLE IF NOT EXISTS object_refs (
    object_id TEXT NOT NULL,
    run_id    {int} NOT NULL,
    PRIMARY KEY (object_id, run_id)
);
CREATE INDEX IF NOT EXISTS object_refs_run ON object_refs (run_id);
CREATE TABLE IF NOT EXISTS contexts (
    run_id  {int} PRIMARY KEY REFERENCES runs (run_id),
    context {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
    run_id {int} NOT NULL REFERENCES runs (run_id),
    idx    {int} NOT NULL,
    line   TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE IF NOT EXISTS tokens (
    token_sha256 TEXT PRIMARY KEY,
    run_id       {int} NOT NULL REFERENCES runs (run_id),
    created_at   {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_run ON tokens (run_id);
CREATE INDEX IF NOT EXISTS runs_active ON runs (seq) WHERE status != 'finished';
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id       {int} PRIMARY KEY REFERENCES runs (run_id),
    server_round {int} NOT NULL,
    payload      {blob} NOT NULL,
    object_ids   {json} NOT NULL,
    saved_at     {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    event_id {serial},
    at       {real} NOT NULL,
    "user"   TEXT NOT NULL,
    action   TEXT NOT NULL,
    run_id   {int} NOT NULL,
    allowed  {int} NOT NULL,
    reason   TEXT NOT NULL,
    peer     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_user ON audit ("user", event_id);
CREATE INDEX IF NOT EXISTS audit_run ON audit (run_id, event_id);
CREATE TABLE IF NOT EXISTS run_usage (
    run_id        {int} PRIMARY KEY REFERENCES runs (run_id),
    object_bytes  {int} NOT NULL DEFAULT 0,
    log_bytes     {int} NOT NULL DEFAULT 0,
    log_first     {int} NOT NULL DEFAULT 0,
    dropped_lines {int} NOT NULL DEFAULT 0,
    dropped_bytes {int} NOT NULL DEFAULT 0
);
"""
SQLITE_TYPES = {
    "int": "INTEGER",
    "real": "REAL",
    "blob": "BLOB",
    "json": "TEXT",
    "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "rowid": "",
}


def tables(types: Mapping[str, str]) -> str:
    """`TABLES` in one backend's types."""
    return TABLES.format_map(types)


# run_usage (version 4): what each run stores, kept up to date so that a quota check never sums
# over a run's rows. object_bytes counts the objects the run stored first (objects.run_id),
# log_bytes its log lines (UTF-8), log_first is the index of its oldest kept line; once
# dropped_lines (of dropped_bytes) were dropped to keep the log within its quota, a marker line
# stands at log_first - 1.
_COUNT_USAGE = """
INSERT OR REPLACE INTO run_usage (run_id, object_bytes, log_bytes)
SELECT run_id,
    (SELECT COALESCE(SUM(size), 0) FROM objects o WHERE o.run_id = runs.run_id),
    (SELECT COALESCE(SUM(length(CAST(line AS BLOB))), 0) FROM logs l WHERE l.run_id = runs.run_id)
FROM runs
"""
PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700  # state files and directories: the owner's only


def connect(database: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the state database and bring its schema to `SCHEMA_VERSION`."""
    name = str(database)
    if name != MEMORY:
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        _make_private(name, create=True)  # before SQLite creates it with the umask's mode
    try:
        conn = sqlite3.connect(name, isolation_level=None, check_same_thread=False, timeout=30.0)
    except sqlite3.Error as exc:
        raise FailedPrecondition(f"cannot open state database {name}: {exc}") from exc
    try:
        _prepare(conn, name)
        if name != MEMORY:  # SQLite gives the files it adds the database's mode; these may be
            for suffix in ("-wal", "-shm"):  # left by an older Corolla
                _make_private(name + suffix, create=False)
    except BaseException:
        conn.close()
        raise
    return conn


def _make_private(path: str, *, create: bool) -> None:
    """Make ``path`` readable and writable by its owner only (creating it if ``create``),
    whatever the umask."""
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_CREAT if create else 0), PRIVATE_FILE)
    except FileNotFoundError:
        if create:
            raise FailedPrecondition(f"cannot create state database {path}") from None
        return
    except OSError as exc:
        raise FailedPrecondition(f"cannot open state database {path}: {exc}") from exc
    try:
        os.fchmod(fd, PRIVATE_FILE)
    except OSError as exc:
        raise FailedPrecondition(f"cannot make {path} private: {exc}") from exc
    finally:
        os.close(fd)


def _prepare(conn: sqlite3.Connection, name: str) -> None:
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA foreign_keys = ON")
        if name != MEMORY:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            found = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            if found is not None and found > SCHEMA_VERSION:
                raise FailedPrecondition(
                    f"state database {name} has schema version {found}, newer than the "
                    f"version {SCHEMA_VERSION} this Corolla supports; upgrade Corolla"
                )
            for statement in tables(SQLITE_TYPES).split(";"):
                if statement.strip():
                    conn.execute(statement)
            if found == 1:  # migrate: payloads may now live in files
                conn.execute("ALTER TABLE objects ADD COLUMN in_file INTEGER NOT NULL DEFAULT 0")
            if found is not None and found < 4:  # migrate: nodes remember when they were seen
                _add_column(conn, "nodes", "last_seen REAL NOT NULL DEFAULT 0")
                conn.execute(_COUNT_USAGE)  # and what each run stores (quotas)
            if found is not None and found < 6:  # migrate: runs keep their federation options
                _add_column(conn, "runs", "federation_options TEXT NOT NULL DEFAULT '{}'")
            if found != SCHEMA_VERSION:
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise FailedPrecondition(f"cannot open state database {name}: {exc}") from exc


def _add_column(conn: sqlite3.Connection, table: str, column: str) -> None:
    """``ALTER TABLE table ADD COLUMN column`` unless it is there (a database set back to an
    older version by hand, as tests do, has it already)."""
    name = column.split()[0]
    if not any(row[1] == name for row in conn.execute(f"PRAGMA table_info({table})")):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
