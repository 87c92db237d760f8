"""`SqlLinkState`: the `LinkState` of both SQL backends, each method written once.

A backend (`SqliteLinkState`, `PostgresLinkState`) gives `_db`: a connection speaking the
shared SQL of `_db.py`, inside one transaction with ``write``, and `close`. Every public method
is one short transaction. Long polls never hold a connection while they wait: a waiter takes a
snapshot of a per-key change counter (`Signals`), looks at the database, and sleeps only if
nothing changed since the snapshot. Writers bump the counters after they commit.
"""

from __future__ import annotations

import contextlib
import time
from abc import abstractmethod
from collections.abc import Callable, Hashable
from typing import TypeVar

from corolla.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from corolla.records.context import UserConfig
from corolla.superlink.state._audit import AuditStore
from corolla.superlink.state._db import FOR_UPDATE, Conn
from corolla.superlink.state._liveness import Beat, Liveness
from corolla.superlink.state._messages import MessageStore
from corolla.superlink.state._nodes import NodeStore
from corolla.superlink.state._objects import ObjectStore
from corolla.superlink.state._queries import (
    ACKNOWLEDGED,
    RUN_COLUMNS,
    dump_config,
    fetch_run,
    new_id,
    run_from_row,
)
from corolla.superlink.state._rundata import RunDataStore
from corolla.superlink.state._signals import Signals, checked_wait
from corolla.superlink.state.base import (
    TRANSITIONS,
    Clock,
    IllegalTransition,
    LinkState,
    RunRecord,
    RunStatus,
    StateLimits,
    SubStatus,
)

_T = TypeVar("_T")
_SUB_STATUSES = (SubStatus.COMPLETED, SubStatus.FAILED, SubStatus.STOPPED)
_TIMESTAMP_COLUMN = {
    RunStatus.STARTING: "starting_at",
    RunStatus.RUNNING: "running_at",
    RunStatus.FINISHED: "finished_at",
}


def _describe(run: RunRecord) -> str:
    return f"finished ({run.sub_status})" if run.status == RunStatus.FINISHED else run.status


class SqlLinkState(ObjectStore, MessageStore, NodeStore, RunDataStore, AuditStore, LinkState):
    """Runs, FABs and the waits; the mixins hold the rest (`ObjectStore` first: the others
    name its methods)."""

    def __init__(
        self,
        *,
        clock: Clock | None,
        limits: StateLimits | None,
        lock: contextlib.AbstractContextManager[object],
    ) -> None:
        """``limits``: what clients can make it store (`StateLimits`, its defaults if None);
        ``lock``: the backend's, which `close` (and the object quotas) take."""
        if clock is not None:
            self.clock = clock
        if limits is not None:
            self.limits = limits
        self._lock = lock
        self._signals = Signals()
        self._closed = False
        self._liveness: Liveness | None = None  # heartbeats in memory (`serve_alone`)
        # Nodes that may have instructions to pull (`serve_alone`): a store adds, a
        # pull that finds none removes, both under the one lock of a single-writer backend.
        self._busy: set[int] | None = None
        self._unfinished: set[int] | None = None  # runs not finished (`serve_alone`)

    @abstractmethod
    def _db(self, *, write: bool = False) -> contextlib.AbstractContextManager[Conn]:
        """A connection (`Unavailable` once closed); with ``write``, inside one transaction
        that commits when the block ends and rolls back if it raises."""

    @abstractmethod
    def _disconnect(self) -> None:
        """Close the database connections (under the lock, once)."""

    def close(self) -> None:
        """Wake every waiter and close the database; later calls raise `Unavailable`."""
        with self._lock:
            if self._closed:
                return
            if self._liveness is not None:  # the last heartbeats kept in memory
                with contextlib.suppress(Unavailable), self._db(write=True) as conn:
                    self._flush_beats(conn)
            self._closed = True
            self._signals.wake_all()
            self._disconnect()

    # -- heartbeats in memory --------------------------------------------------------------------
    def serve_alone(self) -> None:
        """This state is the only one using its database (under one lock): keep in memory the
        nodes' heartbeats (`Liveness`, written in batches), which nodes may have instructions
        to pull, and which runs are unfinished, so that a Fleet call needs no query to learn
        them (`may_have_instructions`, `ended_runs`)."""
        with self._db() as conn:
            rows = conn.execute(
                "SELECT node_id, heartbeat_interval, online_until, last_seen FROM nodes"
            ).fetchall()
            busy = conn.execute(
                "SELECT DISTINCT dst_node_id FROM messages WHERE reply_to_message_id = '' "
                "AND delivered < ?",
                (ACKNOWLEDGED,),
            ).fetchall()
            unfinished = conn.execute(
                "SELECT run_id FROM runs WHERE status != ?", (RunStatus.FINISHED,)
            ).fetchall()
        self._liveness = Liveness((row[0], Beat(row[1], row[2], row[3])) for row in rows)
        self._busy = {row[0] for row in busy}
        self._unfinished = {row[0] for row in unfinished}

    def ended_runs(self, run_ids: list[int]) -> list[int] | None:
        unfinished = self._unfinished
        if unfinished is None:
            return None
        return [run_id for run_id in run_ids if run_id not in unfinished]

    def _beats(self) -> Liveness | None:
        if self._closed:
            raise Unavailable("the SuperLink state is closed")
        return self._liveness

    def _busy_nodes(self) -> set[int] | None:
        return self._busy

    def _flush_beats(self, conn: Conn) -> None:
        """Write the heartbeats kept in memory, in the caller's write transaction."""
        if self._liveness is None:
            return
        conn.executemany(
            "UPDATE nodes SET heartbeat_interval = ?, online_until = ?, last_seen = ? "
            "WHERE node_id = ?",
            [
                (beat.heartbeat_interval, beat.online_until, beat.last_seen, node_id)
                for node_id, beat in self._liveness.take()
            ],
        )

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
            conn.lock("runs")  # one at a time takes the next seq
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
        if self._unfinished is not None:
            self._unfinished.add(run_id)
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
                f"SELECT {RUN_COLUMNS} FROM runs {{runs_active}} "
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
            run = fetch_run(conn, run_id, FOR_UPDATE)
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
                if self._unfinished is not None:
                    self._unfinished.discard(run_id)
            run = fetch_run(conn, run_id)
        self._signals.notify([("run", run_id), ("replies", run_id)])
        if status == RunStatus.FINISHED:
            self.wake_all()  # nodes long-polling for work learn at once that the run ended
        return run

    def annotate_run(self, run_id: int, details: str) -> RunRecord:
        with self._db(write=True) as conn:
            run = fetch_run(conn, run_id, FOR_UPDATE)
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
                "INSERT INTO fabs (fab_hash, content) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (fab_hash, bytes(content)),
            )

    def get_fab(self, fab_hash: str) -> bytes:
        with self._db() as conn:
            query = "SELECT content FROM fabs WHERE fab_hash = ?"
            row = conn.execute(query, (fab_hash,)).fetchone()
        if row is None:
            raise NotFound(f"FAB {fab_hash} not found")
        return bytes(row[0])

    # -- waits ---------------------------------------------------------------------------------
    def wake_all(self) -> None:
        self._signals.wake_all()

    def add_listener(self, listener: Callable[[Hashable], None]) -> None:
        self._signals.add_listener(listener)
