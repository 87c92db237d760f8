"""SQLite schema of the SuperLink state: opening and versioning, row <-> record conversion,
input checks, and the queries several `SqliteLinkState` methods share."""

from __future__ import annotations

import json
import math
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any, TypeVar

from corolla.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from corolla.records.context import UserConfig
from corolla.superlink.state.base import RunRecord, StoredMessage

_K = TypeVar("_K")

SCHEMA_VERSION = 7  # 2: objects.in_file (payload in a file beside the database); 3: checkpoints;
# 4: node_keys (SuperNode authentication allow-list), node_runs (runs a node serves),
# nodes.last_seen; 5: audit (the Exec audit trail); 6: runs.federation_options; 7: answered
# (replies the ServerApp took: a retried push of one is no error), messages.delivered 2 (acked)
MEMORY = ":memory:"

_TABLES = """
CREATE TABLE IF NOT EXISTS runs (
    run_id          INTEGER PRIMARY KEY,
    seq             INTEGER NOT NULL UNIQUE,
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
    pending_at      REAL NOT NULL,
    starting_at     REAL NOT NULL,
    running_at      REAL NOT NULL,
    finished_at     REAL NOT NULL,
    federation_options TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS fabs (
    fab_hash TEXT PRIMARY KEY,
    content  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    node_id            INTEGER PRIMARY KEY,
    heartbeat_interval REAL NOT NULL,
    online_until       REAL NOT NULL,
    registered_at      REAL NOT NULL,
    last_seen          REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS node_keys (
    node_id       INTEGER PRIMARY KEY,
    public_key    BLOB NOT NULL UNIQUE,
    fingerprint   TEXT NOT NULL UNIQUE,
    registered_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS node_runs (
    node_id INTEGER NOT NULL,
    run_id  INTEGER NOT NULL,
    PRIMARY KEY (node_id, run_id)
);
CREATE TABLE IF NOT EXISTS messages (
    message_id          TEXT PRIMARY KEY,
    run_id              INTEGER NOT NULL REFERENCES runs (run_id),
    src_node_id         INTEGER NOT NULL,
    dst_node_id         INTEGER NOT NULL,
    reply_to_message_id TEXT NOT NULL,
    message_type        TEXT NOT NULL,
    created_at          REAL NOT NULL,
    ttl                 REAL NOT NULL,
    payload             BLOB NOT NULL,
    object_ids          TEXT NOT NULL,
    delivered           INTEGER NOT NULL DEFAULT 0  -- instructions: UNDELIVERED, ...
);
CREATE INDEX IF NOT EXISTS messages_dst_delivered ON messages (dst_node_id, delivered);
CREATE INDEX IF NOT EXISTS messages_run ON messages (run_id);
CREATE INDEX IF NOT EXISTS messages_reply_to ON messages (reply_to_message_id);
CREATE TABLE IF NOT EXISTS answered (
    instruction_id TEXT PRIMARY KEY,
    reply_id       TEXT NOT NULL,
    run_id         INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS answered_run ON answered (run_id);
CREATE TABLE IF NOT EXISTS objects (
    object_id TEXT PRIMARY KEY,
    run_id    INTEGER NOT NULL,
    size      INTEGER NOT NULL,
    data      BLOB NOT NULL,
    in_file   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS objects_run ON objects (run_id);
CREATE TABLE IF NOT EXISTS object_refs (
    object_id TEXT NOT NULL,
    run_id    INTEGER NOT NULL,
    PRIMARY KEY (object_id, run_id)
);
CREATE INDEX IF NOT EXISTS object_refs_run ON object_refs (run_id);
CREATE TABLE IF NOT EXISTS contexts (
    run_id  INTEGER PRIMARY KEY REFERENCES runs (run_id),
    context BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
    run_id INTEGER NOT NULL REFERENCES runs (run_id),
    idx    INTEGER NOT NULL,
    line   TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE IF NOT EXISTS tokens (
    token_sha256 TEXT PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs (run_id),
    created_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_run ON tokens (run_id);
CREATE INDEX IF NOT EXISTS runs_active ON runs (seq) WHERE status != 'finished';
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id       INTEGER PRIMARY KEY REFERENCES runs (run_id),
    server_round INTEGER NOT NULL,
    payload      BLOB NOT NULL,
    object_ids   TEXT NOT NULL,
    saved_at     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    at       REAL NOT NULL,
    user     TEXT NOT NULL,
    action   TEXT NOT NULL,
    run_id   INTEGER NOT NULL,
    allowed  INTEGER NOT NULL,
    reason   TEXT NOT NULL,
    peer     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_user ON audit (user, event_id);
CREATE INDEX IF NOT EXISTS audit_run ON audit (run_id, event_id);
CREATE TABLE IF NOT EXISTS run_usage (
    run_id        INTEGER PRIMARY KEY REFERENCES runs (run_id),
    object_bytes  INTEGER NOT NULL DEFAULT 0,
    log_bytes     INTEGER NOT NULL DEFAULT 0,
    log_first     INTEGER NOT NULL DEFAULT 0,
    dropped_lines INTEGER NOT NULL DEFAULT 0,
    dropped_bytes INTEGER NOT NULL DEFAULT 0
);
"""
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
# messages.delivered of an instruction: never pulled; pulled (it comes again with every pull
# until acknowledged or answered); acknowledged or answered (pulls leave it out).
UNDELIVERED, DELIVERED, ACKNOWLEDGED = 0, 1, 2

RUN_COLUMNS = (
    "run_id, fab_id, fab_version, fab_hash, override_config, run_config, federation, owner, "
    "status, sub_status, details, pending_at, starting_at, running_at, finished_at, "
    "federation_options"
)
_MESSAGE_FIELDS = (
    "message_id",
    "run_id",
    "src_node_id",
    "dst_node_id",
    "reply_to_message_id",
    "message_type",
    "created_at",
    "ttl",
    "payload",
    "object_ids",
)
MESSAGE_COLUMNS = ", ".join(_MESSAGE_FIELDS)
M_MESSAGE_COLUMNS = ", ".join(f"m.{field}" for field in _MESSAGE_FIELDS)  # aliased as ``m``


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
            for statement in _TABLES.split(";"):
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


def dump_config(config: UserConfig, what: str) -> str:
    """``config`` as JSON, after checking it maps strings to int/float/str/bool."""
    if not isinstance(config, dict):
        raise InvalidArgument(f"{what} must be a dict, not {type(config).__name__}")
    for key, value in config.items():
        if not isinstance(key, str) or not isinstance(value, int | float | str | bool):
            raise InvalidArgument(f"{what}[{key!r}] must map a str to an int, float, str or bool")
    return json.dumps(config)


def run_from_row(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        fab_id=row[1],
        fab_version=row[2],
        fab_hash=row[3],
        override_config=json.loads(row[4]),
        run_config=json.loads(row[5]),
        federation=row[6],
        owner=row[7],
        status=row[8],
        sub_status=row[9],
        details=row[10],
        pending_at=row[11],
        starting_at=row[12],
        running_at=row[13],
        finished_at=row[14],
        federation_options=json.loads(row[15]),
    )


def message_to_row(msg: StoredMessage) -> tuple[Any, ...]:
    return (
        msg.message_id,
        msg.run_id,
        msg.src_node_id,
        msg.dst_node_id,
        msg.reply_to_message_id,
        msg.message_type,
        msg.created_at,
        msg.ttl,
        bytes(msg.payload),
        json.dumps(list(msg.object_ids)),
    )


def message_from_row(row: tuple[Any, ...]) -> StoredMessage:
    return StoredMessage(
        message_id=row[0],
        run_id=row[1],
        src_node_id=row[2],
        dst_node_id=row[3],
        reply_to_message_id=row[4],
        message_type=row[5],
        created_at=row[6],
        ttl=row[7],
        payload=bytes(row[8]),
        object_ids=tuple(json.loads(row[9])),
    )


def check_message(msg: StoredMessage, *, reply: bool) -> None:
    """Raise `InvalidArgument` unless ``msg`` is a well-formed instruction (or reply)."""
    what = "reply" if reply else "instruction"
    if not isinstance(msg, StoredMessage):
        raise InvalidArgument(f"a {what} must be a StoredMessage, not {type(msg).__name__}")
    if not msg.message_id:
        raise InvalidArgument(f"a {what} needs a message_id")
    if reply and not msg.reply_to_message_id:
        raise InvalidArgument(f"reply {msg.message_id} does not name the instruction it answers")
    if not reply and msg.reply_to_message_id:
        raise InvalidArgument(f"instruction {msg.message_id} must not have a reply_to_message_id")
    if not (msg.ttl > 0 and math.isfinite(msg.ttl) and math.isfinite(msg.created_at)):
        raise InvalidArgument(f"{what} {msg.message_id} needs a finite created_at and ttl > 0")
    if not all(isinstance(oid, str) and oid for oid in msg.object_ids):
        raise InvalidArgument(f"{what} {msg.message_id} has an empty or non-str object id")


# -- queries shared by several methods (``table``/``column`` are fixed names, never user input) --
def new_id(conn: sqlite3.Connection, table: str, column: str) -> int:
    """A random id in [1, 2**63) not yet used in ``table.column``."""
    while True:
        candidate = secrets.randbits(63)
        query = f"SELECT 1 FROM {table} WHERE {column} = ?"
        if candidate and conn.execute(query, (candidate,)).fetchone() is None:
            return candidate


def existing(conn: sqlite3.Connection, table: str, column: str, keys: list[_K]) -> set[_K]:
    """Those of ``keys`` present in ``table.column``."""
    query = f"SELECT {column} FROM {table} WHERE {column} IN (SELECT value FROM json_each(?))"
    return {row[0] for row in conn.execute(query, (json.dumps(keys),))}


def fetch_run(conn: sqlite3.Connection, run_id: int) -> RunRecord:
    row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        raise NotFound(f"run {run_id} not found")
    return run_from_row(row)


def require_node(conn: sqlite3.Connection, node_id: int) -> None:
    if conn.execute("SELECT 1 FROM nodes WHERE node_id = ?", (node_id,)).fetchone() is None:
        raise NotFound(f"node {node_id} not found")


def refuse_known_ids(conn: sqlite3.Connection, messages: list[StoredMessage]) -> None:
    """`AlreadyExists` if a message id repeats or is stored already."""
    ids = [msg.message_id for msg in messages]
    if len(set(ids)) != len(ids):
        raise AlreadyExists("the same message id appears twice")
    if duplicates := sorted(existing(conn, "messages", "message_id", ids)):
        raise AlreadyExists(f"message id(s) exist already: {duplicates}")


def new_messages(conn: sqlite3.Connection, messages: list[StoredMessage]) -> list[StoredMessage]:
    """``messages`` less those stored already with the same content (a retried push);
    `AlreadyExists` if a stored one with the same id differs."""
    ids = [msg.message_id for msg in messages]
    rows = conn.execute(
        "SELECT message_id, payload FROM messages "
        "WHERE message_id IN (SELECT value FROM json_each(?))",
        (json.dumps(ids),),
    ).fetchall()
    stored = {row[0]: bytes(row[1]) for row in rows}
    for msg in messages:
        if msg.message_id in stored and stored[msg.message_id] != bytes(msg.payload):
            raise AlreadyExists(f"message id {msg.message_id} exists with other content")
    return [msg for msg in messages if msg.message_id not in stored]


def insert_messages(conn: sqlite3.Connection, messages: list[StoredMessage]) -> None:
    """Insert instructions or replies (undelivered); their run now references their objects,
    which must be stored (checked here, in the transaction: an object of the run's messages
    just acknowledged may have been collected since the caller asked)."""
    refuse_known_ids(conn, messages)
    wanted = sorted({oid for msg in messages for oid in msg.object_ids})
    present: set[str] = existing(conn, "objects", "object_id", wanted)
    if gone := sorted(set(wanted) - present):
        raise FailedPrecondition(f"messages reference objects not stored: {', '.join(gone)}")
    conn.executemany(
        f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [message_to_row(msg) for msg in messages],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO object_refs (object_id, run_id) VALUES (?, ?)",
        [(oid, msg.run_id) for msg in messages for oid in msg.object_ids],
    )


def stored_reply(conn: sqlite3.Connection, reply: StoredMessage) -> bool:
    """True if ``reply`` is stored already, or was until the ServerApp took it: a retried push
    (a reply is identified by its id, the instruction it answers and its node). `AlreadyExists`
    if another message has its id."""
    row = conn.execute(
        "SELECT reply_to_message_id, src_node_id FROM messages WHERE message_id = ?",
        (reply.message_id,),
    ).fetchone()
    if row is not None:
        if tuple(row) != (reply.reply_to_message_id, reply.src_node_id):
            raise AlreadyExists(f"message id {reply.message_id} exists with other content")
        return True
    query = "SELECT 1 FROM answered WHERE instruction_id = ? AND reply_id = ?"
    return conn.execute(query, (reply.reply_to_message_id, reply.message_id)).fetchone() is not None


def check_reply(conn: sqlite3.Connection, node_id: int, reply: StoredMessage) -> None:
    """Raise unless ``reply`` answers an instruction delivered to ``node_id``, unanswered yet."""
    instruction_id = reply.reply_to_message_id
    row = conn.execute(
        "SELECT run_id, dst_node_id, delivered FROM messages "
        "WHERE message_id = ? AND reply_to_message_id = ''",
        (instruction_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"instruction {instruction_id} not found")
    run_id, dst_node_id, delivered = row
    if dst_node_id != node_id:
        raise InvalidArgument(f"instruction {instruction_id} was not sent to node {node_id}")
    if not delivered:
        raise InvalidArgument(f"instruction {instruction_id} has not been delivered")
    if run_id != reply.run_id:
        raise InvalidArgument(f"reply {reply.message_id} is for run {reply.run_id}, not {run_id}")
    query = "SELECT 1 FROM messages WHERE reply_to_message_id = ?"
    if conn.execute(query, (instruction_id,)).fetchone() is not None:
        raise InvalidArgument(f"instruction {instruction_id} has been answered already")
