"""The audit part of the SQL states: one row per Exec call, the oldest dropped past a cap."""

from __future__ import annotations

import contextlib

from corolla.common.errors import InvalidArgument
from corolla.superlink.state._db import Conn
from corolla.superlink.state.base import AuditEvent, StateLimits

MAX_LIST = 10_000  # events one `list_audit` returns at most
_TRIM_EVERY = 1_000  # rows past the cap before the oldest are deleted (one DELETE, not one each)


class AuditStore:
    """Mixed into `SqlLinkState`; the backend provides the connection and the limits."""

    limits: StateLimits

    def _db(self, *, write: bool = False) -> contextlib.AbstractContextManager[Conn]:
        raise NotImplementedError  # provided by the backend

    def record_audit(self, event: AuditEvent) -> None:
        with self._db(write=True) as conn:
            cursor = conn.execute(  # "user": a keyword of PostgreSQL's
                'INSERT INTO audit (at, "user", action, run_id, allowed, reason, peer) '
                "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING event_id",
                (
                    event.at,
                    event.user,
                    event.action,
                    event.run_id,
                    int(event.allowed),
                    event.reason,
                    event.peer,
                ),
            )
            newest = int(cursor.fetchall()[0][0])
            oldest = conn.execute("SELECT MIN(event_id) FROM audit").fetchone()[0] or newest
            cap = self.limits.max_audit_events
            if newest - oldest + 1 > cap + min(_TRIM_EVERY, cap):
                conn.execute("DELETE FROM audit WHERE event_id <= ?", (newest - cap,))

    def list_audit(
        self, *, user: str = "", run_id: int = 0, since: float = 0.0, limit: int = 100
    ) -> list[AuditEvent]:
        if not 1 <= limit <= MAX_LIST:
            raise InvalidArgument(f"limit must be in 1..{MAX_LIST}, not {limit}")
        where: list[str] = ["at >= ?"]
        args: list[object] = [since]
        if user:
            where.append('"user" = ?')
            args.append(user)
        if run_id:
            where.append("run_id = ?")
            args.append(run_id)
        query = (
            'SELECT event_id, at, "user", action, run_id, allowed, reason, peer FROM audit '
            f"WHERE {' AND '.join(where)} ORDER BY event_id DESC LIMIT ?"
        )
        with self._db() as conn:
            rows = conn.execute(query, [*args, limit]).fetchall()
        return [
            AuditEvent(
                event_id=row[0],
                at=row[1],
                user=row[2],
                action=row[3],
                run_id=row[4],
                allowed=bool(row[5]),
                reason=row[6],
                peer=row[7],
            )
            for row in rows
        ]
