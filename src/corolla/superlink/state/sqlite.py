"""`SqliteLinkState`: the SuperLink state in one SQLite database (durable unless ``:memory:``).

One connection is shared by all threads under a lock; every public method is one short
transaction. Long-polls never hold that lock: a waiter takes a snapshot of a per-key change
counter, looks at the database, and sleeps only if nothing changed since the snapshot. Writers
bump the counters after they commit.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import TypeVar

from corolla.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from corolla.records.context import UserConfig
from corolla.superlink.state._audit import AuditStore
from corolla.superlink.state._nodes import NodeStore
from corolla.superlink.state._objects import ObjectStore
from corolla.superlink.state._rundata import RunDataStore
from corolla.superlink.state._schema import (
    ACKNOWLEDGED,
    DELIVERED,
    M_MESSAGE_COLUMNS,
    MESSAGE_COLUMNS,
    RUN_COLUMNS,
    UNDELIVERED,
    check_message,
    check_reply,
    connect,
    dump_config,
    existing,
    fetch_run,
    insert_messages,
    message_from_row,
    new_id,
    new_messages,
    require_node,
    run_from_row,
    stored_reply,
)
from corolla.superlink.state._signals import Signals, checked_wait
from corolla.superlink.state.base import (
    TRANSITIONS,
    Clock,
    IllegalTransition,
    LinkState,
    RunRecord,
    RunStatus,
    StateLimits,
    StoredMessage,
    SubStatus,
)

_T = TypeVar("_T")
_SUB_STATUSES = (SubStatus.COMPLETED, SubStatus.FAILED, SubStatus.STOPPED)
_TIMESTAMP_COLUMN = {
    RunStatus.STARTING: "starting_at",
    RunStatus.RUNNING: "running_at",
    RunStatus.FINISHED: "finished_at",
}
_MAX_ID = 2**63


def _describe(run: RunRecord) -> str:
    return f"finished ({run.sub_status})" if run.status == RunStatus.FINISHED else run.status


class SqliteLinkState(NodeStore, ObjectStore, RunDataStore, AuditStore, LinkState):
    """`LinkState` in SQLite: a file (WAL mode, survives restarts) or ``":memory:"``.

    Choices within the interface: expired instructions are skipped by `pull_instructions` but
    kept until `lost_instructions` reports them; a finished run's instructions are no longer
    delivered and its reply waits return at once; an object is deleted only when no run that
    stored or referenced it is left unfinished; the database file, its WAL files and the
    object files are the owner's only (0600, directories 0700), whatever the umask.
    """

    def __init__(
        self,
        database: str | Path = ":memory:",
        *,
        clock: Clock | None = None,
        limits: StateLimits | None = None,
    ) -> None:
        """``limits``: what clients can make it store (`StateLimits`, its defaults if None)."""
        if clock is not None:
            self.clock = clock
        if limits is not None:
            self.limits = limits
        self.database = str(database)
        self._lock = threading.RLock()
        self._signals = Signals()
        self._closed = False
        self._conn = connect(database)
        try:  # payloads beside a file database, as blobs in memory
            memory = self.database == ":memory:"
            self._open_objects(None if memory else Path(f"{self.database}.objects"))
        except BaseException:
            self._conn.close()
            raise

    def __repr__(self) -> str:
        return f"SqliteLinkState({self.database!r})"

    # -- plumbing ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _db(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; with ``write``, inside one immediate transaction."""
        with self._lock:
            if self._closed:
                raise Unavailable("the SuperLink state is closed")
            conn = self._conn
            try:
                if write:
                    conn.execute("BEGIN IMMEDIATE")
                yield conn
                if write:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise Unavailable(f"state database {self.database}: {exc}") from exc
            except OverflowError as exc:  # SQLite integers are 64-bit signed
                raise InvalidArgument(f"an id out of range (at most 2**63 - 1): {exc}") from exc
            finally:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")

    def _poll(
        self, key: Hashable, fetch: Callable[[], _T], ready: Callable[[_T], bool], wait: float
    ) -> _T:
        """``fetch()`` until ``ready`` or ``wait`` seconds passed or `wake_all` was called."""
        deadline = time.monotonic() + checked_wait(wait)
        start_epoch = self._signals.snapshot(key)[1]
        while True:
            snapshot = self._signals.snapshot(key)
            result = fetch()
            if ready(result) or snapshot[1] != start_epoch:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return result
            self._signals.sleep(key, snapshot, remaining)

    # -- runs ----------------------------------------------------------------------------------
    def create_run(
        self,
        *,
        fab_id: str,
        fab_version: str,
        fab_hash: str,
        override_config: UserConfig,
        run_config: UserConfig,
        federation: str = "",
        owner: str = "",
        federation_options: UserConfig | None = None,
    ) -> int:
        override_json = dump_config(override_config, "override_config")
        run_json = dump_config(run_config, "run_config")
        options_json = dump_config(federation_options or {}, "federation_options")
        with self._db(write=True) as conn:
            run_id = new_id(conn, "runs", "run_id")
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()[0]
            conn.execute(
                f"INSERT INTO runs (seq, {RUN_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', '', ?, 0, 0, 0, ?)",
                (
                    seq,
                    run_id,
                    fab_id,
                    fab_version,
                    fab_hash,
                    override_json,
                    run_json,
                    federation,
                    owner,
                    RunStatus.PENDING,
                    self.clock(),
                    options_json,
                ),
            )
        return run_id

    def get_run(self, run_id: int) -> RunRecord:
        with self._db() as conn:
            return fetch_run(conn, run_id)

    def list_runs(self) -> list[RunRecord]:
        with self._db() as conn:
            rows = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY seq").fetchall()
        return [run_from_row(row) for row in rows]

    def active_runs(self) -> list[RunRecord]:
        with self._db() as conn:
            rows = conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs INDEXED BY runs_active "
                "WHERE status != 'finished' ORDER BY seq"
            ).fetchall()
        return [run_from_row(row) for row in rows]

    def update_run_status(
        self,
        run_id: int,
        status: str,
        sub_status: str = "",
        details: str = "",
        *,
        expected: str | None = None,
    ) -> RunRecord:
        if status not in TRANSITIONS:
            raise InvalidArgument(f"unknown run status {status!r}")
        if status == RunStatus.FINISHED and sub_status not in _SUB_STATUSES:
            raise InvalidArgument(f"a finished run needs a sub_status, one of {_SUB_STATUSES}")
        if status != RunStatus.FINISHED and sub_status:
            raise InvalidArgument(f"sub_status is only for finished runs, not {status!r}")
        with self._db(write=True) as conn:
            run = fetch_run(conn, run_id)
            if expected is not None and run.status != expected:
                raise IllegalTransition(
                    f"run {run_id} is {_describe(run)}, not {expected}: cannot make it {status}"
                )
            if status not in TRANSITIONS[run.status]:
                raise IllegalTransition(f"run {run_id} cannot go from {_describe(run)} to {status}")
            now = self.clock()
            if status == RunStatus.PENDING:  # re-queued: it starts over, with new tokens
                conn.execute(
                    "UPDATE runs SET status = ?, details = ?, pending_at = ?, starting_at = 0, "
                    "running_at = 0 WHERE run_id = ?",
                    (status, details, now, run_id),
                )
                conn.execute("DELETE FROM tokens WHERE run_id = ?", (run_id,))
            else:
                conn.execute(
                    f"UPDATE runs SET status = ?, sub_status = ?, details = ?, "
                    f"{_TIMESTAMP_COLUMN[status]} = ? WHERE run_id = ?",
                    (status, sub_status, details, now, run_id),
                )
            if status == RunStatus.FINISHED:
                conn.execute("DELETE FROM tokens WHERE run_id = ?", (run_id,))
                conn.execute("DELETE FROM answered WHERE run_id = ?", (run_id,))
                self._forget_run_objects(conn, run_id)  # its checkpoint is of no more use
            run = fetch_run(conn, run_id)
        self._signals.notify([("run", run_id), ("replies", run_id)])
        if status == RunStatus.FINISHED:
            self.wake_all()  # nodes long-polling for work learn at once that the run ended
        return run

    def annotate_run(self, run_id: int, details: str) -> RunRecord:
        with self._db(write=True) as conn:
            run = fetch_run(conn, run_id)
            if run.status == RunStatus.FINISHED:
                raise FailedPrecondition(f"run {run_id} is finished ({run.sub_status})")
            conn.execute("UPDATE runs SET details = ? WHERE run_id = ?", (details, run_id))
            run = fetch_run(conn, run_id)
        self._signals.notify([("run", run_id)])
        return run

    def wait_for_status_change(self, run_id: int, known: str, wait: float) -> RunRecord:
        return self._poll(
            ("run", run_id), lambda: self.get_run(run_id), lambda run: run.status != known, wait
        )

    # -- FABs ----------------------------------------------------------------------------------
    def store_fab(self, fab_hash: str, content: bytes) -> None:
        if not fab_hash:
            raise InvalidArgument("a FAB needs a hash")
        with self._db(write=True) as conn:
            conn.execute(
                "INSERT OR IGNORE INTO fabs (fab_hash, content) VALUES (?, ?)",
                (fab_hash, bytes(content)),
            )

    def get_fab(self, fab_hash: str) -> bytes:
        with self._db() as conn:
            query = "SELECT content FROM fabs WHERE fab_hash = ?"
            row = conn.execute(query, (fab_hash,)).fetchone()
        if row is None:
            raise NotFound(f"FAB {fab_hash} not found")
        return bytes(row[0])

    # -- messages ------------------------------------------------------------------------------
    def store_instructions(self, messages: list[StoredMessage]) -> None:
        for msg in messages:
            check_message(msg, reply=False)
        dst_ids = sorted({msg.dst_node_id for msg in messages})
        with self._db(write=True) as conn:
            for run_id in {msg.run_id for msg in messages}:
                if fetch_run(conn, run_id).status == RunStatus.FINISHED:
                    raise FailedPrecondition(f"run {run_id} is finished")
            known = existing(conn, "nodes", "node_id", dst_ids)
            if unknown := [node_id for node_id in dst_ids if node_id not in known]:
                raise InvalidArgument(f"unknown destination node(s): {unknown}")
            insert_messages(conn, new_messages(conn, messages))
            conn.executemany(
                "INSERT OR IGNORE INTO node_runs (node_id, run_id) VALUES (?, ?)",
                {(msg.dst_node_id, msg.run_id) for msg in messages},
            )
        self._signals.notify(("node", node_id) for node_id in dst_ids)

    def pull_instructions(self, node_id: int, limit: int, wait: float = 0.0) -> list[StoredMessage]:
        if limit < 1:
            raise InvalidArgument(f"limit must be >= 1, not {limit}")
        return self._poll(
            ("node", node_id), lambda: self._take_instructions(node_id, limit), bool, wait
        )

    def _take_instructions(self, node_id: int, limit: int) -> list[StoredMessage]:
        # Expired instructions are skipped, not deleted: `lost_instructions` reports them.
        # Instructions of finished runs are skipped too: nobody waits for their replies.
        with self._db(write=True) as conn:
            require_node(conn, node_id)
            rows = conn.execute(
                f"SELECT {M_MESSAGE_COLUMNS} FROM messages m JOIN runs r ON r.run_id = m.run_id "
                "WHERE m.dst_node_id = ? AND m.delivered < ? AND m.reply_to_message_id = '' "
                "AND m.created_at + m.ttl >= ? AND r.status != ? "
                "ORDER BY m.created_at, m.rowid LIMIT ?",
                (node_id, ACKNOWLEDGED, self.clock(), RunStatus.FINISHED, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE messages SET delivered = ? WHERE message_id = ? AND delivered = ?",
                [(DELIVERED, row[0], UNDELIVERED) for row in rows],
            )
        return [message_from_row(row) for row in rows]

    def ack_instructions(self, node_id: int, message_ids: list[str]) -> None:
        if not message_ids:
            return
        with self._db(write=True) as conn:
            conn.execute(
                "UPDATE messages SET delivered = ? WHERE dst_node_id = ? AND delivered = ? "
                "AND reply_to_message_id = '' AND message_id IN (SELECT value FROM json_each(?))",
                (ACKNOWLEDGED, node_id, DELIVERED, json.dumps(message_ids)),
            )

    def store_replies(self, node_id: int, replies: list[StoredMessage]) -> None:
        for reply in replies:
            check_message(reply, reply=True)
            if reply.src_node_id != node_id:
                raise InvalidArgument(f"reply {reply.message_id} is not from node {node_id}")
        answered = [reply.reply_to_message_id for reply in replies]
        if len(set(answered)) != len(answered):
            raise InvalidArgument("two replies answer the same instruction")
        with self._db(write=True) as conn:
            require_node(conn, node_id)
            fresh = [reply for reply in replies if not stored_reply(conn, reply)]
            for reply in fresh:
                check_reply(conn, node_id, reply)
            insert_messages(conn, fresh)
            conn.executemany(  # answered: pulls leave it out
                "UPDATE messages SET delivered = ? WHERE message_id = ?",
                [(ACKNOWLEDGED, reply.reply_to_message_id) for reply in fresh],
            )
        self._signals.notify(("replies", run_id) for run_id in {r.run_id for r in fresh})

    def pull_replies(
        self, run_id: int, message_ids: list[str], wait: float = 0.0
    ) -> list[StoredMessage]:
        ids_json = json.dumps([message_id for message_id in message_ids if message_id])

        def take() -> tuple[list[StoredMessage], bool]:
            with self._db(write=True) as conn:
                finished = fetch_run(conn, run_id).status == RunStatus.FINISHED
                rows = conn.execute(
                    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE run_id = ? "
                    "AND reply_to_message_id IN (SELECT value FROM json_each(?)) "
                    "ORDER BY created_at, rowid",
                    (run_id, ids_json),
                ).fetchall()
            return [message_from_row(row) for row in rows], finished

        # A finished run gets no more replies: return at once instead of waiting.
        wait = wait if message_ids else 0.0
        replies, _ = self._poll(("replies", run_id), take, lambda got: bool(got[0]) or got[1], wait)
        return replies

    def ack_replies(self, run_id: int, reply_ids: list[str]) -> None:
        if not reply_ids:
            return
        with self._db(write=True) as conn:
            rows = conn.execute(
                "SELECT message_id, reply_to_message_id FROM messages WHERE run_id = ? "
                "AND reply_to_message_id != '' AND message_id IN (SELECT value FROM json_each(?))",
                (run_id, json.dumps(reply_ids)),
            ).fetchall()
            conn.executemany(  # a retried push of one of them is no error
                "INSERT OR IGNORE INTO answered (instruction_id, reply_id, run_id) "
                "VALUES (?, ?, ?)",
                [(row[1], row[0], run_id) for row in rows],
            )
            done = [row[0] for row in rows] + [row[1] for row in rows]
            self._delete_messages(conn, run_id, done)

    def _delete_messages(self, conn: sqlite3.Connection, run_id: int, ids: list[str]) -> None:
        """Delete messages of the run, and the objects only they used (`_collect_objects`)."""
        if not ids:
            return
        query = (
            "SELECT object_ids FROM messages WHERE message_id IN (SELECT value FROM json_each(?))"
        )
        used = [
            oid for (row,) in conn.execute(query, (json.dumps(ids),)) for oid in json.loads(row)
        ]
        conn.executemany("DELETE FROM messages WHERE message_id = ?", [(i,) for i in ids])
        self._collect_objects(conn, run_id, used)

    def lost_instructions(self, run_id: int, message_ids: list[str]) -> list[StoredMessage]:
        with self._db(write=True) as conn:
            fetch_run(conn, run_id)
            now = self.clock()
            rows = conn.execute(
                f"SELECT {M_MESSAGE_COLUMNS} FROM messages m "
                "LEFT JOIN nodes n ON n.node_id = m.dst_node_id "
                "WHERE m.run_id = ? AND m.reply_to_message_id = '' "
                "AND m.message_id IN (SELECT value FROM json_each(?)) "
                "AND NOT EXISTS "
                "(SELECT 1 FROM messages a WHERE a.reply_to_message_id = m.message_id) "
                "AND (n.node_id IS NULL OR n.online_until <= ? OR m.created_at + m.ttl < ?) "
                "ORDER BY m.created_at, m.rowid",
                (run_id, json.dumps(message_ids), now, now),
            ).fetchall()
            self._delete_messages(conn, run_id, [row[0] for row in rows])
        return [message_from_row(row) for row in rows]

    def wake_all(self) -> None:
        self._signals.wake_all()

    def add_listener(self, listener: Callable[[Hashable], None]) -> None:
        self._signals.add_listener(listener)

    def close(self) -> None:
        """Wake every waiter and close the database; later calls raise `Unavailable`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._signals.wake_all()
            self._conn.close()
