"""`PostgresLinkState`: the SuperLink state in a PostgreSQL database, payloads as files.

The methods are `SqlLinkState`'s (written once for both backends); this module opens the
database (`_pgschema`), lends each call a connection of a small pool (`_pg`) and turns
database errors into `Unavailable`. Needs the ``corolla[postgres]`` extra (psycopg 3).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from corolla.common.errors import InvalidArgument, Unavailable
from corolla.superlink.state._pg import Pool, PostgresConn
from corolla.superlink.state._pgschema import prepare
from corolla.superlink.state._sql import SqlLinkState
from corolla.superlink.state.base import Clock, StateLimits

DEFAULT_POOL_SIZE = 8  # connections one state keeps at most


def describe(url: str) -> str:
    """``url`` without its password: ``postgresql://user@host:port/dbname``."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise InvalidArgument(f"not a PostgreSQL connection URL: {exc}") from exc
    user = f"{info['user']}@" if info.get("user") else ""
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{info.get('host', '')}{port}/{info.get('dbname', '')}"


class PostgresLinkState(SqlLinkState):
    """`LinkState` in PostgreSQL: durable, and shareable by several SuperLink processes.

    ``url`` is a ``postgresql://`` connection URL; objects are files in ``object_dir``
    (named as the SQLite state names them; their rows in the database), which may be shared
    storage. Thread-safe: each call takes one of at most ``pool_size`` connections, for one
    transaction, and never keeps it while it waits. Long polls wake on the writes of this
    process (and at their deadline)."""

    def __init__(
        self,
        url: str,
        object_dir: str | Path,
        *,
        clock: Clock | None = None,
        limits: StateLimits | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        super().__init__(clock=clock, limits=limits, lock=threading.Lock())
        self.database = describe(url)
        self._pool = Pool(url, pool_size)
        try:
            with self._db() as conn:
                prepare(conn.raw, self.database)
            self._open_objects(Path(object_dir), shared=True)
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresLinkState({self.database!r})"

    @contextlib.contextmanager
    def _db(self, *, write: bool = False) -> Iterator[PostgresConn]:
        """A connection of the pool; with ``write``, inside one transaction."""
        if self._closed:
            raise Unavailable("the SuperLink state is closed")
        try:
            with self._pool.connection() as conn:
                if write:
                    with conn.raw.transaction():
                        yield conn
                else:
                    yield conn
        except psycopg.Error as exc:  # on one line: libpq adds hints on lines of their own
            raise Unavailable(
                f"state database {self.database}: {' '.join(str(exc).split())}"
            ) from exc

    def _disconnect(self) -> None:
        self._pool.close()  # the connections in use close when they are given back
