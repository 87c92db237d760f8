"""PostgreSQL under the shared SQL: `PostgresConn` (psycopg 3) and `Pool`, a small set of
connections that threads take one each, for one transaction or one read, and give back.

Connections are in autocommit mode: a read is single statements, a write is
``conn.raw.transaction()`` (READ COMMITTED; the row locks of `_db` make it as atomic as SQLite's
``BEGIN IMMEDIATE`` where it matters). A connection that broke is closed, not given back.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.types.string import TextLoader

from corolla.common.errors import InvalidArgument, Unavailable
from corolla.superlink.state._db import Conn, Params, Rows

_INT64 = range(-(2**63), 2**63)
CONNECT_TIMEOUT = 10  # seconds to reach the server
TAKE_TIMEOUT = 30.0  # seconds a caller waits for a free connection of the pool

Raw = psycopg.Connection[tuple[Any, ...]]


def _check_range(params: Params) -> None:
    """`InvalidArgument` for an integer PostgreSQL's BIGINT cannot hold (psycopg would send it
    as NUMERIC, and it would match nothing)."""
    for value in params:
        values = value if isinstance(value, list) else (value,)
        for item in values:
            if isinstance(item, int) and item not in _INT64:
                raise InvalidArgument(f"an id out of range (at most 2**63 - 1): {item}")


def lock_key(name: str) -> int:
    """The advisory lock number of ``name`` (a signed 64-bit integer)."""
    digest = hashlib.blake2b(f"corolla:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresConn(Conn):
    """A psycopg connection (``raw``) taking the shared SQL."""

    TOKENS: ClassVar[Mapping[str, str]] = {
        "in_list": "= ANY(?)",
        "json_items": "json_array_elements_text",
        "for_update": "FOR UPDATE",
        "for_share": "FOR SHARE",
        "for_key_share": "FOR KEY SHARE",
        "runs_active": "",
    }

    def __init__(self, raw: Raw) -> None:
        self.raw = raw

    @classmethod
    def spell(cls, query: str) -> str:
        return super().spell(query.replace("%", "%%")).replace("?", "%s")

    def execute(self, query: str, params: Params = ()) -> Rows:
        _check_range(params)
        return self.raw.execute(self.sql(query), params)

    def executemany(self, query: str, rows: Iterable[Params]) -> None:
        batch = list(rows)
        for row in batch:
            _check_range(row)
        if batch:
            with self.raw.cursor() as cursor:
                cursor.executemany(self.sql(query), batch)

    def lock(self, name: str) -> None:
        self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(name),))


def connect(url: str) -> PostgresConn:
    raw: Raw = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    raw.adapters.register_loader("json", TextLoader)  # object_ids: the JSON text, as SQLite's
    return PostgresConn(raw)


class Pool:
    """At most ``size`` connections to ``url``, made when first needed and kept for reuse."""

    def __init__(self, url: str, size: int) -> None:
        if size < 1:
            raise InvalidArgument(f"a pool needs at least one connection, not {size}")
        self._url = url
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[PostgresConn] = []
        self._closed = False

    @contextlib.contextmanager
    def connection(self) -> Iterator[PostgresConn]:
        """One connection for the block (psycopg errors propagate: the caller wraps them)."""
        if not self._slots.acquire(timeout=TAKE_TIMEOUT):
            raise Unavailable(f"no free state database connection within {TAKE_TIMEOUT:.0f} s")
        try:
            conn = self._take()
            try:
                yield conn
            finally:
                self._give(conn)
        finally:
            self._slots.release()

    def _take(self) -> PostgresConn:
        with self._lock:
            if self._closed:
                raise Unavailable("the SuperLink state is closed")
            if self._idle:
                return self._idle.pop()
        return connect(self._url)  # outside the lock: it may take a while

    def _give(self, conn: PostgresConn) -> None:
        raw = conn.raw
        healthy = not raw.closed and raw.info.transaction_status == TransactionStatus.IDLE
        with self._lock:
            if healthy and not self._closed:
                self._idle.append(conn)
                return
        raw.close()

    def close(self) -> None:
        """Close the idle connections; those in use close when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.raw.close()
