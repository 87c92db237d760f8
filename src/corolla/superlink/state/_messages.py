"""The message part of the SQL states: instructions to nodes, their replies, what is lost.

Row locks (PostgreSQL) follow the order `_db` gives: a pull, an acknowledgement, a reply and
the ServerApp's acknowledgement or loss report lock the instructions they change in id order
before anything else, so two replies to one instruction are never both stored.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

from corolla.common.errors import CorollaError, FailedPrecondition, InvalidArgument, NotFound
from corolla.superlink.state._db import FOR_KEY_SHARE, FOR_SHARE, FOR_UPDATE, IN_LIST, Conn
from corolla.superlink.state._queries import (
    ACKNOWLEDGED,
    DELIVERED,
    M_MESSAGE_COLUMNS,
    MESSAGE_COLUMNS,
    UNDELIVERED,
    check_message,
    check_reply,
    existing,
    fetch_run,
    insert_messages,
    lock_messages,
    message_from_row,
    new_messages,
    require_node,
    stored_reply,
)
from corolla.superlink.state._signals import Signals
from corolla.superlink.state.base import Clock, RunStatus, StoredMessage

_T = TypeVar("_T")

# The instructions of a pull or an acknowledgement, locked in id order, then changed.
_MARK = (
    f"UPDATE messages SET delivered = ? WHERE message_id IN (SELECT message_id FROM messages "
    f"WHERE message_id {IN_LIST} AND dst_node_id = ? AND reply_to_message_id = '' "
    f"AND delivered = ? ORDER BY message_id {FOR_UPDATE})"
)


class MessageStore:
    """Mixed into `SqlLinkState`, which provides the connection, the waits and the clock."""

    clock: Clock
    _signals: Signals

    def _db(self, *, write: bool = False) -> contextlib.AbstractContextManager[Conn]:
        raise NotImplementedError  # provided by the backend

    def _poll(
        self, key: Hashable, fetch: Callable[[], _T], ready: Callable[[_T], bool], wait: float
    ) -> _T:
        raise NotImplementedError  # provided by SqlLinkState

    def _flush_beats(self, conn: Conn) -> None:
        raise NotImplementedError  # provided by SqlLinkState

    def _busy_nodes(self) -> set[int] | None:
        raise NotImplementedError  # provided by SqlLinkState

    def _collect_objects(self, conn: Conn, run_id: int, candidates: Iterable[str]) -> int:
        raise NotImplementedError  # provided by ObjectStore

    def store_instructions(self, messages: list[StoredMessage]) -> None:
        for msg in messages:
            check_message(msg, reply=False)
        dst_ids = sorted({msg.dst_node_id for msg in messages})
        with self._db(write=True) as conn:
            for run_id in sorted({msg.run_id for msg in messages}):
                if fetch_run(conn, run_id, FOR_SHARE).status == RunStatus.FINISHED:
                    raise FailedPrecondition(f"run {run_id} is finished")
            known = existing(conn, "nodes", "node_id", dst_ids, FOR_KEY_SHARE)
            if unknown := [node_id for node_id in dst_ids if node_id not in known]:
                raise InvalidArgument(f"unknown destination node(s): {unknown}")
            insert_messages(conn, new_messages(conn, messages))
            conn.executemany(
                "INSERT INTO node_runs (node_id, run_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                sorted({(msg.dst_node_id, msg.run_id) for msg in messages}),
            )
            if (busy := self._busy_nodes()) is not None:  # in the transaction: see `_take`
                busy.update(dst_ids)
        self._signals.notify(("node", node_id) for node_id in dst_ids)

    def may_have_instructions(self, node_id: int) -> bool:
        busy = self._busy_nodes()
        return busy is None or node_id in busy

    def pull_instructions(self, node_id: int, limit: int, wait: float = 0.0) -> list[StoredMessage]:
        if limit < 1:
            raise InvalidArgument(f"limit must be >= 1, not {limit}")
        return self._poll(
            ("node", node_id), lambda: self._take_instructions(node_id, limit), bool, wait
        )

    def _take_instructions(self, node_id: int, limit: int) -> list[StoredMessage]:
        with self._db(write=True) as conn:
            require_node(conn, node_id)
            return self._take_in(conn, node_id, limit)

    def take_instructions(
        self, pulls: Mapping[int, Sequence[str]], limit: int
    ) -> dict[int, list[StoredMessage]]:
        if limit < 1:
            raise InvalidArgument(f"limit must be >= 1, not {limit}")
        taken = {}
        with self._db(write=True) as conn:
            for node_id, acks in pulls.items():
                with contextlib.suppress(NotFound):  # not registered: left out
                    require_node(conn, node_id)
                    if acks:
                        conn.execute(_MARK, (ACKNOWLEDGED, list(acks), node_id, DELIVERED))
                    taken[node_id] = self._take_in(conn, node_id, limit)
        return taken

    def _take_in(self, conn: Conn, node_id: int, limit: int) -> list[StoredMessage]:
        # Expired instructions are skipped, not deleted: `lost_instructions` reports them.
        # Instructions of finished runs are skipped too: nobody waits for their replies.
        rows = conn.execute(
            f"SELECT {M_MESSAGE_COLUMNS} FROM messages m JOIN runs r ON r.run_id = m.run_id "
            "WHERE m.dst_node_id = ? AND m.delivered < ? AND m.reply_to_message_id = '' "
            "AND m.created_at + m.ttl >= ? AND r.status != ? "
            "ORDER BY m.created_at, m.rowid LIMIT ?",
            (node_id, ACKNOWLEDGED, self.clock(), RunStatus.FINISHED, limit),
        ).fetchall()
        if rows:
            ids = [row[0] for row in rows]
            conn.execute(_MARK, (DELIVERED, ids, node_id, UNDELIVERED))
        elif (busy := self._busy_nodes()) is not None:
            busy.discard(node_id)  # under the lock a store adds under: never a lost add
        return [message_from_row(row) for row in rows]

    def ack_instructions(self, node_id: int, message_ids: list[str]) -> None:
        if not message_ids:
            return
        with self._db(write=True) as conn:
            conn.execute(_MARK, (ACKNOWLEDGED, list(message_ids), node_id, DELIVERED))

    def store_replies(self, node_id: int, replies: list[StoredMessage]) -> None:
        _check_replies(node_id, replies)
        with self._db(write=True) as conn:
            fresh = _store_replies_in(conn, node_id, replies)
        self._signals.notify(("replies", run_id) for run_id in {r.run_id for r in fresh})

    def store_replies_many(
        self, pushes: Sequence[tuple[int, list[StoredMessage]]]
    ) -> list[CorollaError | None]:
        outcomes: list[CorollaError | None] = []
        runs: set[int] = set()
        with self._db(write=True) as conn:
            for node_id, replies in pushes:
                try:
                    _check_replies(node_id, replies)
                    conn.execute("SAVEPOINT push")
                    try:
                        fresh = _store_replies_in(conn, node_id, replies)
                    except BaseException:
                        conn.execute("ROLLBACK TO SAVEPOINT push")
                        raise
                    finally:
                        conn.execute("RELEASE SAVEPOINT push")
                except CorollaError as exc:  # this push's alone: the others go on
                    outcomes.append(exc)
                    continue
                runs.update(reply.run_id for reply in fresh)
                outcomes.append(None)
        self._signals.notify(("replies", run_id) for run_id in runs)
        return outcomes

    def pull_replies(
        self, run_id: int, message_ids: list[str], wait: float = 0.0
    ) -> list[StoredMessage]:
        wanted = [message_id for message_id in message_ids if message_id]

        def take() -> tuple[list[StoredMessage], bool]:
            with self._db() as conn:
                finished = fetch_run(conn, run_id).status == RunStatus.FINISHED
                rows = conn.execute(
                    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE run_id = ? "
                    f"AND reply_to_message_id {IN_LIST} ORDER BY created_at, rowid",
                    (run_id, wanted),
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
                f"AND reply_to_message_id != '' AND message_id {IN_LIST}",
                (run_id, list(reply_ids)),
            ).fetchall()
            lock_messages(conn, [row[1] for row in rows])
            conn.executemany(  # a retried push of one of them is no error
                "INSERT INTO answered (instruction_id, reply_id, run_id) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [(row[1], row[0], run_id) for row in rows],
            )
            done = [row[0] for row in rows] + [row[1] for row in rows]
            self._delete_messages(conn, run_id, done)

    def _delete_messages(self, conn: Conn, run_id: int, ids: list[str]) -> None:
        """Delete messages of the run, and the objects only they used (`_collect_objects`)."""
        if not ids:
            return
        query = f"SELECT object_ids FROM messages WHERE message_id {IN_LIST}"
        used = [oid for (row,) in conn.execute(query, (ids,)) for oid in json.loads(row)]
        conn.executemany("DELETE FROM messages WHERE message_id = ?", [(i,) for i in ids])
        self._collect_objects(conn, run_id, used)

    def lost_instructions(self, run_id: int, message_ids: list[str]) -> list[StoredMessage]:
        with self._db(write=True) as conn:
            self._flush_beats(conn)  # heartbeats kept in memory: the query reads them
            fetch_run(conn, run_id)
            lock_messages(conn, list(message_ids))  # a reply now comes before, or not at all
            now = self.clock()
            rows = conn.execute(
                f"SELECT {M_MESSAGE_COLUMNS} FROM messages m "
                "LEFT JOIN nodes n ON n.node_id = m.dst_node_id "
                "WHERE m.run_id = ? AND m.reply_to_message_id = '' "
                f"AND m.message_id {IN_LIST} AND NOT EXISTS "
                "(SELECT 1 FROM messages a WHERE a.reply_to_message_id = m.message_id) "
                "AND (n.node_id IS NULL OR n.online_until <= ? OR m.created_at + m.ttl < ?) "
                "ORDER BY m.created_at, m.rowid",
                (run_id, list(message_ids), now, now),
            ).fetchall()
            self._delete_messages(conn, run_id, [row[0] for row in rows])
        return [message_from_row(row) for row in rows]


def _check_replies(node_id: int, replies: list[StoredMessage]) -> None:
    for reply in replies:
        check_message(reply, reply=True)
        if reply.src_node_id != node_id:
            raise InvalidArgument(f"reply {reply.message_id} is not from node {node_id}")
    answered = [reply.reply_to_message_id for reply in replies]
    if len(set(answered)) != len(answered):
        raise InvalidArgument("two replies answer the same instruction")


def _store_replies_in(
    conn: Conn, node_id: int, replies: list[StoredMessage]
) -> list[StoredMessage]:
    """Store a node's checked replies in the open transaction; the ones stored now."""
    require_node(conn, node_id)
    lock_messages(conn, [reply.reply_to_message_id for reply in replies])  # until the commit
    fresh = [reply for reply in replies if not stored_reply(conn, reply)]
    for reply in fresh:
        check_reply(conn, node_id, reply)
    insert_messages(conn, fresh)
    conn.executemany(  # answered: pulls leave it out
        "UPDATE messages SET delivered = ? WHERE message_id = ?",
        [(ACKNOWLEDGED, reply.reply_to_message_id) for reply in fresh],
    )
    return fresh
