"""The node part of the SQL states: registration, heartbeats, the SuperNode key allow-list,
and which runs (and objects) a node may read."""

from __future__ import annotations

import contextlib
import math

from corolla.common.errors import AlreadyExists, InvalidArgument, NotFound
from corolla.superlink.state._db import IN_LIST, JSON_ITEMS, Conn
from corolla.superlink.state._liveness import Beat, Liveness
from corolla.superlink.state._queries import new_id
from corolla.superlink.state._signals import Signals
from corolla.superlink.state.base import HEARTBEAT_PATIENCE, Clock, NodeRecord

_MAX_ID = 2**63


def _check_interval(interval: float) -> None:
    if not (interval > 0 and math.isfinite(interval)):
        raise InvalidArgument(f"heartbeat interval must be > 0 seconds, not {interval}")


class NodeStore:
    """Mixed into `SqlLinkState`; the backend provides the connection and the clock."""

    clock: Clock
    _signals: Signals

    def _db(self, *, write: bool = False) -> contextlib.AbstractContextManager[Conn]:
        raise NotImplementedError  # provided by the backend

    def _beats(self) -> Liveness | None:
        raise NotImplementedError  # provided by SqlLinkState: heartbeats in memory, if kept

    def _flush_beats(self, conn: Conn) -> None:
        raise NotImplementedError  # provided by SqlLinkState

    def create_node(self, heartbeat_interval: float, requested_node_id: int = 0) -> int:
        _check_interval(heartbeat_interval)
        if not 0 <= requested_node_id < _MAX_ID:
            raise InvalidArgument(f"requested node id {requested_node_id} is not in [0, 2**63)")
        with self._db(write=True) as conn:
            node_id = requested_node_id or _new_node_id(conn)
            now = self.clock()
            beat = Beat(heartbeat_interval, now + heartbeat_interval * HEARTBEAT_PATIENCE, now)
            conn.execute(
                "INSERT INTO nodes (node_id, heartbeat_interval, online_until, registered_at, "
                "last_seen) VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET "
                "heartbeat_interval = excluded.heartbeat_interval, "
                "online_until = excluded.online_until, last_seen = excluded.last_seen",
                (node_id, beat.heartbeat_interval, beat.online_until, now, beat.last_seen),
            )
        if (beats := self._beats()) is not None:  # once the row is committed
            beats.set(node_id, beat)
        return node_id

    def delete_node(self, node_id: int) -> None:
        with self._db(write=True) as conn:
            if conn.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,)).rowcount == 0:
                raise NotFound(f"node {node_id} not found")
            if (beats := self._beats()) is not None:
                beats.forget(node_id)
        self._signals.notify([("node", node_id)])

    def _beat(self, node_id: int, heartbeat_interval: float, beats: Liveness) -> None:
        """A heartbeat in memory (the database gets them in batches)."""
        _check_interval(heartbeat_interval)
        if not 0 <= node_id < _MAX_ID:
            raise InvalidArgument(f"node id {node_id} is not in [0, 2**63)")
        now = self.clock()
        beat = Beat(heartbeat_interval, now + heartbeat_interval * HEARTBEAT_PATIENCE, now)
        if not beats.beat(node_id, beat):
            raise NotFound(f"node {node_id} not found")

    def heartbeat_nowait(self, node_id: int, heartbeat_interval: float) -> bool:
        beats = self._beats()
        if beats is None:  # the database: on a thread
            return False
        self._beat(node_id, heartbeat_interval, beats)
        return True

    def write_heartbeats(self) -> None:
        beats = self._beats()
        if beats is not None and beats.claim():  # one caller at a time writes the batch
            try:
                with self._db(write=True) as conn:
                    self._flush_beats(conn)
            finally:
                beats.unclaim()  # (written, or failed: the next caller tries again)

    def heartbeat(self, node_id: int, heartbeat_interval: float) -> None:
        beats = self._beats()
        if beats is not None:
            self._beat(node_id, heartbeat_interval, beats)
            self.write_heartbeats()  # if a batch is due, and nobody is writing it
            return
        _check_interval(heartbeat_interval)
        now = self.clock()
        beat = Beat(heartbeat_interval, now + heartbeat_interval * HEARTBEAT_PATIENCE, now)
        with self._db(write=True) as conn:
            cursor = conn.execute(
                "UPDATE nodes SET heartbeat_interval = ?, online_until = ?, last_seen = ? "
                "WHERE node_id = ?",
                (beat.heartbeat_interval, beat.online_until, beat.last_seen, node_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"node {node_id} not found")

    def is_online(self, node_id: int) -> bool:
        if (beats := self._beats()) is not None:
            return beats.online(node_id, self.clock())
        with self._db() as conn:
            query = "SELECT 1 FROM nodes WHERE node_id = ? AND online_until > ?"
            return conn.execute(query, (node_id, self.clock())).fetchone() is not None

    def online_node_ids(self) -> list[int]:
        if (beats := self._beats()) is not None:
            return beats.online_ids(self.clock())
        with self._db() as conn:
            query = "SELECT node_id FROM nodes WHERE online_until > ? ORDER BY node_id"
            return [row[0] for row in conn.execute(query, (self.clock(),))]

    # -- the SuperNode key allow-list --------------------------------------------------------
    def register_node_key(self, public_key: bytes, fingerprint: str) -> int:
        with self._db(write=True) as conn:
            conn.lock("node_keys")  # one at a time checks, then registers
            query = "SELECT node_id FROM node_keys WHERE fingerprint = ?"
            row = conn.execute(query, (fingerprint,)).fetchone()
            if row is not None:
                raise AlreadyExists(f"this key is registered already, as node {row[0]}")
            node_id = _new_node_id(conn)
            conn.execute(
                "INSERT INTO node_keys (node_id, public_key, fingerprint, registered_at) "
                "VALUES (?, ?, ?, ?)",
                (node_id, public_key, fingerprint, self.clock()),
            )
        return node_id

    def unregister_node(self, node_id: int) -> None:
        with self._db(write=True) as conn:
            keys = conn.execute("DELETE FROM node_keys WHERE node_id = ?", (node_id,)).rowcount
            nodes = conn.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,)).rowcount
            if keys == 0 and nodes == 0:
                raise NotFound(f"node {node_id} not found")
            if (beats := self._beats()) is not None:
                beats.forget(node_id)
        self._signals.notify([("node", node_id)])

    def node_key(self, fingerprint: str) -> tuple[int, bytes]:
        with self._db() as conn:
            query = "SELECT node_id, public_key FROM node_keys WHERE fingerprint = ?"
            row = conn.execute(query, (fingerprint,)).fetchone()
        if row is None:
            raise NotFound(f"no SuperNode key {fingerprint} is registered")
        return int(row[0]), bytes(row[1])

    def list_nodes(self) -> list[NodeRecord]:
        now = self.clock()
        with self._db(write=self._beats() is not None) as conn:
            self._flush_beats(conn)  # those kept in memory first
            rows = conn.execute(
                "SELECT k.node_id, k.fingerprint, k.registered_at, n.online_until, n.last_seen "
                "FROM node_keys k LEFT JOIN nodes n ON n.node_id = k.node_id "
                "UNION ALL "
                "SELECT n.node_id, '', n.registered_at, n.online_until, n.last_seen FROM nodes n "
                "WHERE n.node_id NOT IN (SELECT node_id FROM node_keys) ORDER BY 1"
            ).fetchall()
        return [
            NodeRecord(
                node_id=row[0],
                fingerprint=row[1],
                registered_at=row[2],
                online=row[3] is not None and row[3] > now,
                last_seen=row[4] or 0.0,
            )
            for row in rows
        ]

    # -- what a node may read ----------------------------------------------------------------
    def node_serves_run(self, node_id: int, run_id: int) -> bool:
        with self._db() as conn:
            query = "SELECT 1 FROM node_runs WHERE node_id = ? AND run_id = ?"
            return conn.execute(query, (node_id, run_id)).fetchone() is not None

    def node_object_ids(self, node_id: int, run_id: int, object_ids: list[str]) -> set[str]:
        with self._db() as conn:
            rows = conn.execute(
                f"SELECT DISTINCT j.value FROM messages m, {JSON_ITEMS}(m.object_ids) j "
                "WHERE m.dst_node_id = ? AND m.run_id = ? AND m.reply_to_message_id = ''",
                (node_id, run_id),
            ).fetchall()
        referenced = {row[0] for row in rows}
        return {oid for oid in object_ids if oid in referenced}

    def run_object_ids(self, run_id: int, object_ids: list[str]) -> set[str]:
        with self._db() as conn:
            rows = conn.execute(
                f"SELECT object_id FROM object_refs WHERE run_id = ? AND object_id {IN_LIST}",
                (run_id, list(object_ids)),
            ).fetchall()
        return {row[0] for row in rows}


def _new_node_id(conn: Conn) -> int:
    """A random id used neither by a registered node nor by a registered key."""
    while True:
        node_id = new_id(conn, "nodes", "node_id")
        query = "SELECT 1 FROM node_keys WHERE node_id = ?"
        if conn.execute(query, (node_id,)).fetchone() is None:
            return node_id
