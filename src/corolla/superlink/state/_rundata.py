"""The per-run data part of `SqliteLinkState`: contexts, logs, checkpoints and app tokens."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import sqlite3

from corolla.common.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from corolla.superlink.state._schema import existing, fetch_run
from corolla.superlink.state.base import Clock


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class RunDataStore:
    """Mixed into `SqliteLinkState`, which provides the connection and the clock."""

    clock: Clock

    def _db(self, *, write: bool = False) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # provided by SqliteLinkState

    # -- contexts, logs, tokens ----------------------------------------------------------------
    def set_context(self, run_id: int, context: bytes) -> None:
        with self._db(write=True) as conn:
            fetch_run(conn, run_id)
            conn.execute(
                "INSERT INTO contexts (run_id, context) VALUES (?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET context = excluded.context",
                (run_id, bytes(context)),
            )

    def get_context(self, run_id: int) -> bytes | None:
        with self._db() as conn:
            fetch_run(conn, run_id)
            query = "SELECT context FROM contexts WHERE run_id = ?"
            row = conn.execute(query, (run_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def append_logs(self, run_id: int, lines: list[str]) -> None:
        if not all(isinstance(line, str) for line in lines):
            raise InvalidArgument("log lines must be str")
        with self._db(write=True) as conn:
            fetch_run(conn, run_id)
            query = "SELECT COALESCE(MAX(idx) + 1, 0) FROM logs WHERE run_id = ?"
            start = conn.execute(query, (run_id,)).fetchone()[0]
            conn.executemany(
                "INSERT INTO logs (run_id, idx, line) VALUES (?, ?, ?)",
                [(run_id, start + i, line) for i, line in enumerate(lines)],
            )

    def get_logs(self, run_id: int, after: int = 0) -> tuple[list[str], int]:
        if after < 0:
            raise InvalidArgument(f"after must be >= 0, not {after}")
        with self._db() as conn:
            fetch_run(conn, run_id)
            rows = conn.execute(
                "SELECT idx, line FROM logs WHERE run_id = ? AND idx >= ? ORDER BY idx",
                (run_id, after),
            ).fetchall()
        return [row[1] for row in rows], (rows[-1][0] + 1 if rows else after)

    def set_checkpoint(
        self, run_id: int, server_round: int, payload: bytes, object_ids: list[str]
    ) -> None:
        if server_round < 1:
            raise InvalidArgument(f"a checkpoint is taken after a round >= 1, not {server_round}")
        with self._db(write=True) as conn:
            fetch_run(conn, run_id)
            stored: set[str] = existing(conn, "objects", "object_id", list(object_ids))
            if missing := sorted(set(object_ids) - stored):
                raise FailedPrecondition(f"checkpoint objects not pushed: {', '.join(missing)}")
            conn.execute(
                "INSERT INTO checkpoints (run_id, server_round, payload, object_ids, saved_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
                "server_round = excluded.server_round, payload = excluded.payload, "
                "object_ids = excluded.object_ids, saved_at = excluded.saved_at",
                (run_id, server_round, bytes(payload), json.dumps(object_ids), self.clock()),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO object_refs (object_id, run_id) VALUES (?, ?)",
                [(oid, run_id) for oid in object_ids],
            )

    def get_checkpoint(self, run_id: int) -> tuple[int, bytes] | None:
        with self._db() as conn:
            fetch_run(conn, run_id)
            query = "SELECT server_round, payload FROM checkpoints WHERE run_id = ?"
            row = conn.execute(query, (run_id,)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def create_token(self, run_id: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._db(write=True) as conn:
            fetch_run(conn, run_id)
            conn.execute(
                "INSERT INTO tokens (token_sha256, run_id, created_at) VALUES (?, ?, ?)",
                (token_digest(token), run_id, self.clock()),
            )
        return token

    def run_id_for_token(self, token: str) -> int:
        if not isinstance(token, str) or not token:
            raise Unauthenticated("no app token given")
        with self._db() as conn:
            query = "SELECT run_id FROM tokens WHERE token_sha256 = ?"
            row = conn.execute(query, (token_digest(token),)).fetchone()
        if row is None:
            raise Unauthenticated("unknown app token")
        return int(row[0])
