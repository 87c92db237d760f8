"""What the SQL backends share below their methods: row <-> record conversion, input checks,
and the queries several methods use (in the shared SQL of `_db`)."""

from __future__ import annotations

import json
import math
import secrets
from typing import Any, TypeVar

from corolla.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from corolla.records.context import UserConfig
from corolla.superlink.state._db import FOR_KEY_SHARE, FOR_UPDATE, IN_LIST, Conn
from corolla.superlink.state.base import RunRecord, StoredMessage

_K = TypeVar("_K")

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
def new_id(conn: Conn, table: str, column: str) -> int:
    """A random id in [1, 2**63) not yet used in ``table.column``."""
    while True:
        candidate = secrets.randbits(63)
        query = f"SELECT 1 FROM {table} WHERE {column} = ?"
        if candidate and conn.execute(query, (candidate,)).fetchone() is None:
            return candidate


def existing(conn: Conn, table: str, column: str, keys: list[_K], lock: str = "") -> set[_K]:
    """Those of ``keys`` present in ``table.column``; with ``lock`` (`FOR_UPDATE`, ...) their
    rows are locked, in key order, until the transaction ends."""
    order = f" ORDER BY {column} {lock}" if lock else ""
    query = f"SELECT {column} FROM {table} WHERE {column} {IN_LIST}{order}"
    return {row[0] for row in conn.execute(query, (list(keys),))}


def lock_messages(conn: Conn, message_ids: list[str]) -> None:
    """Lock these messages' rows until the transaction ends (see `_db` for the order)."""
    if message_ids:
        existing(conn, "messages", "message_id", message_ids, FOR_UPDATE)


def fetch_run(conn: Conn, run_id: int, lock: str = "") -> RunRecord:
    """The run; with ``lock`` (`FOR_SHARE`, `FOR_UPDATE`) its row is locked until the
    transaction ends."""
    query = f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ? {lock}"
    row = conn.execute(query, (run_id,)).fetchone()
    if row is None:
        raise NotFound(f"run {run_id} not found")
    return run_from_row(row)


def require_node(conn: Conn, node_id: int) -> None:
    if conn.execute("SELECT 1 FROM nodes WHERE node_id = ?", (node_id,)).fetchone() is None:
        raise NotFound(f"node {node_id} not found")


def refuse_known_ids(conn: Conn, messages: list[StoredMessage]) -> None:
    """`AlreadyExists` if a message id repeats or is stored already."""
    ids = [msg.message_id for msg in messages]
    if len(set(ids)) != len(ids):
        raise AlreadyExists("the same message id appears twice")
    if duplicates := sorted(existing(conn, "messages", "message_id", ids)):
        raise AlreadyExists(f"message id(s) exist already: {duplicates}")


def new_messages(conn: Conn, messages: list[StoredMessage]) -> list[StoredMessage]:
    """``messages`` less those stored already with the same content (a retried push);
    `AlreadyExists` if a stored one with the same id differs."""
    ids = [msg.message_id for msg in messages]
    query = f"SELECT message_id, payload FROM messages WHERE message_id {IN_LIST}"
    rows = conn.execute(query, (ids,)).fetchall()
    stored = {row[0]: bytes(row[1]) for row in rows}
    for msg in messages:
        if msg.message_id in stored and stored[msg.message_id] != bytes(msg.payload):
            raise AlreadyExists(f"message id {msg.message_id} exists with other content")
    return [msg for msg in messages if msg.message_id not in stored]


def insert_messages(conn: Conn, messages: list[StoredMessage]) -> None:
    """Insert instructions or replies (undelivered); their run now references their objects,
    which must be stored (checked here, in the transaction: an object of the run's messages
    just acknowledged may have been collected since the caller asked)."""
    refuse_known_ids(conn, messages)
    wanted = sorted({oid for msg in messages for oid in msg.object_ids})
    present: set[str] = existing(conn, "objects", "object_id", wanted, FOR_KEY_SHARE)
    if gone := sorted(set(wanted) - present):
        raise FailedPrecondition(f"messages reference objects not stored: {', '.join(gone)}")
    conn.executemany(
        f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [message_to_row(msg) for msg in messages],
    )
    conn.executemany(
        "INSERT INTO object_refs (object_id, run_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(oid, msg.run_id) for msg in messages for oid in msg.object_ids],
    )


def stored_reply(conn: Conn, reply: StoredMessage) -> bool:
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


def check_reply(conn: Conn, node_id: int, reply: StoredMessage) -> None:
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
