"""The per-run data part of the SQL states: contexts, logs (within their quota),
checkpoints and app tokens."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from collections.abc import Iterable, Iterator

from corolla.common.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from corolla.superlink.state._db import FOR_SHARE, FOR_UPDATE, Conn
from corolla.superlink.state._queries import existing, fetch_run
from corolla.superlink.state.base import Clock, StateLimits, describe_bytes

_LINE_FRAMING = 8  # bytes a line adds to a response besides its text (tag, length)
_LOG_PAGE = 256  # log lines read at a time


def _log_lines(conn: Conn, run_id: int, start: int) -> Iterator[tuple[int, str]]:
    """The run's lines from index ``start`` on, a page at a time: a reader that stops early
    has read little (a PostgreSQL cursor holds its whole result)."""
    while True:
        rows = conn.execute(
            "SELECT idx, line FROM logs WHERE run_id = ? AND idx >= ? ORDER BY idx LIMIT ?",
            (run_id, start, _LOG_PAGE),
        ).fetchall()
        yield from rows
        if len(rows) < _LOG_PAGE:
            return
        start = rows[-1][0] + 1


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class RunDataStore:
    """Mixed into `SqlLinkState`; the backend provides the connection, the clock and the limits.

    A run's log keeps a running count of its bytes (``run_usage``), so neither an append nor
    the quota check reads the whole log."""

    clock: Clock
    limits: StateLimits

    def _db(self, *, write: bool = False) -> contextlib.AbstractContextManager[Conn]:
        raise NotImplementedError  # provided by the backend

    def _collect_objects(self, conn: Conn, run_id: int, candidates: Iterable[str]) -> int:
        raise NotImplementedError  # provided by ObjectStore

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
        try:
            added = sum(len(line.encode()) for line in lines)
        except UnicodeEncodeError as exc:
            raise InvalidArgument(f"a log line is not valid text: {exc}") from exc
        with self._db(write=True) as conn:
            fetch_run(conn, run_id)
            conn.execute(  # first: the usage row is the lock on the run's log
                "INSERT INTO run_usage (run_id, log_bytes) VALUES (?, ?) ON CONFLICT (run_id) "
                "DO UPDATE SET log_bytes = run_usage.log_bytes + excluded.log_bytes",
                (run_id, added),
            )
            query = "SELECT COALESCE(MAX(idx) + 1, 0) FROM logs WHERE run_id = ?"
            start = conn.execute(query, (run_id,)).fetchone()[0]
            conn.executemany(
                "INSERT INTO logs (run_id, idx, line) VALUES (?, ?, ?)",
                [(run_id, start + i, line) for i, line in enumerate(lines)],
            )
            self._trim_log(conn, run_id)

    def _trim_log(self, conn: Conn, run_id: int) -> None:
        """Drop the oldest lines while the log is over its quota; one marker line, at the
        index of the last dropped line, replaces them (and the marker of earlier drops)."""
        quota = self.limits.max_run_log_bytes
        query = (
            "SELECT log_bytes, log_first, dropped_lines, dropped_bytes FROM run_usage "
            "WHERE run_id = ?"
        )
        used, first, dropped_lines, dropped_bytes = conn.execute(query, (run_id,)).fetchone()
        if used <= quota:
            return
        freed = count = 0
        end = first
        for idx, line in _log_lines(conn, run_id, first):  # up to the lines dropped
            if used - freed <= quota:
                break
            freed, count, end = freed + len(line.encode()), count + 1, idx + 1
        dropped_lines, dropped_bytes = dropped_lines + count, dropped_bytes + freed
        conn.execute(
            "DELETE FROM logs WHERE run_id = ? AND idx >= ? AND idx < ?", (run_id, first - 1, end)
        )
        marker = (
            f"[corolla] {dropped_lines} earlier log lines ({describe_bytes(dropped_bytes)}) "
            f"dropped: the run's log is over its quota of {describe_bytes(quota)}"
        )
        conn.execute(
            "INSERT INTO logs (run_id, idx, line) VALUES (?, ?, ?)", (run_id, end - 1, marker)
        )
        conn.execute(
            "UPDATE run_usage SET log_bytes = ?, log_first = ?, dropped_lines = ?, "
            "dropped_bytes = ? WHERE run_id = ?",
            (used - freed, end, dropped_lines, dropped_bytes, run_id),
        )

    def get_logs(
        self, run_id: int, after: int = 0, max_bytes: int | None = None
    ) -> tuple[list[str], int]:
        # A line counts its UTF-8 bytes plus a few for its framing in a response.
        budget = self.limits.log_batch_bytes if max_bytes is None else max_bytes
        if after < 0:
            raise InvalidArgument(f"after must be >= 0, not {after}")
        if budget < 1:
            raise InvalidArgument(f"max_bytes must be >= 1, not {budget}")
        lines: list[str] = []
        taken, next_index = 0, after
        with self._db() as conn:
            fetch_run(conn, run_id)
            for idx, line in _log_lines(conn, run_id, after):  # up to the batch's end
                taken += len(line.encode()) + _LINE_FRAMING
                if lines and taken > budget:
                    break
                lines.append(line)
                next_index = idx + 1
        return lines, next_index

    def set_checkpoint(
        self, run_id: int, server_round: int, payload: bytes, object_ids: list[str]
    ) -> None:
        if server_round < 1:
            raise InvalidArgument(f"a checkpoint is taken after a round >= 1, not {server_round}")
        with self._db(write=True) as conn:
            fetch_run(conn, run_id, FOR_SHARE)
            query = "SELECT object_ids FROM checkpoints WHERE run_id = ?"
            previous = conn.execute(query, (run_id,)).fetchone()
            replaced: list[str] = [] if previous is None else json.loads(previous[0])
            # One lock for the objects it keeps and those it may let go (see `_db`).
            locked = existing(conn, "objects", "object_id", [*object_ids, *replaced], FOR_UPDATE)
            if missing := sorted(set(object_ids) - locked):
                raise FailedPrecondition(f"checkpoint objects not pushed: {', '.join(missing)}")
            conn.execute(
                "INSERT INTO checkpoints (run_id, server_round, payload, object_ids, saved_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
                "server_round = excluded.server_round, payload = excluded.payload, "
                "object_ids = excluded.object_ids, saved_at = excluded.saved_at",
                (run_id, server_round, bytes(payload), json.dumps(object_ids), self.clock()),
            )
            conn.executemany(
                "INSERT INTO object_refs (object_id, run_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(oid, run_id) for oid in object_ids],
            )
            self._collect_objects(conn, run_id, replaced)  # of the checkpoint it replaces

    def get_checkpoint(self, run_id: int) -> tuple[int, bytes] | None:
        with self._db() as conn:
            fetch_run(conn, run_id)
            query = "SELECT server_round, payload FROM checkpoints WHERE run_id = ?"
            row = conn.execute(query, (run_id,)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def create_token(self, run_id: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._db(write=True) as conn:
            fetch_run(conn, run_id, FOR_SHARE)  # a run that finishes now voids it
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
