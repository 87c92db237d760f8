"""`SqliteLinkState`: the SuperLink state in one SQLite database (durable unless ``:memory:``).

One connection is shared by all threads under a lock; every public method is one short
transaction (`SqlLinkState` holds the methods, `_db.SqliteConn` speaks SQLite's SQL). Objects
are files beside a file database, blobs in memory (read and written here, in pieces).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from corolla.common.errors import InvalidArgument, NotFound, Unavailable
from corolla.superlink.state._db import Conn, SqliteConn
from corolla.superlink.state._schema import connect
from corolla.superlink.state._sql import SqlLinkState
from corolla.superlink.state.base import Clock, StateLimits

_COPY_CHUNK = 1 << 20  # bytes copied into an object blob at a time


class SqliteLinkState(SqlLinkState):
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
        super().__init__(clock=clock, limits=limits, lock=threading.RLock())
        self.database = str(database)
        self._conn = SqliteConn(connect(database))
        try:  # payloads beside a file database, as blobs in memory
            memory = self.database == ":memory:"
            self._open_objects(None if memory else Path(f"{self.database}.objects"))
            self.serve_alone()  # one process has the database
        except BaseException:
            self._conn.raw.close()
            raise

    def __repr__(self) -> str:
        return f"SqliteLinkState({self.database!r})"

    @contextlib.contextmanager
    def _db(self, *, write: bool = False) -> Iterator[SqliteConn]:
        """The connection, under the lock; with ``write``, inside one immediate transaction."""
        with self._lock:
            if self._closed:
                raise Unavailable("the SuperLink state is closed")
            conn = self._conn.raw
            try:
                if write:
                    conn.execute("BEGIN IMMEDIATE")
                yield self._conn
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

    def _disconnect(self) -> None:
        self._conn.raw.close()

    # -- objects as blobs (``:memory:``) -------------------------------------------------------
    def _insert_blob(self, conn: Conn, run_id: int, object_id: str, view: memoryview) -> None:
        # Reserve the blob, then copy in chunks: SQLite never holds a second full copy.
        raw = self._conn.raw  # ``conn`` is its wrapper
        cursor = raw.execute(
            "INSERT INTO objects (object_id, run_id, size, data) VALUES (?, ?, ?, zeroblob(?))",
            (object_id, run_id, view.nbytes, view.nbytes),
        )
        assert cursor.lastrowid is not None  # every INSERT sets it
        with raw.blobopen("objects", "data", cursor.lastrowid) as blob:
            for start in range(0, view.nbytes, _COPY_CHUNK):
                blob.write(view[start : start + _COPY_CHUNK])
        self._count(conn, run_id, view.nbytes)

    def _object_chunks(self, object_id: str, size: int, chunk_size: int) -> Iterator[bytes]:
        # One blob handle for the whole read: reopening it per chunk makes SQLite walk the
        # overflow-page chain from the start each time (quadratic in the object's size).
        # The lock is held per chunk, never while the consumer handles one.
        with self._db() as conn:
            query = "SELECT rowid FROM objects WHERE object_id = ?"
            row = conn.execute(query, (object_id,)).fetchone()
            if row is None:
                raise NotFound(f"object {object_id} was deleted while being read")
            blob = self._conn.raw.blobopen("objects", "data", row[0], readonly=True)
        try:
            offset = 0
            while offset < size:
                with self._db():
                    try:
                        chunk = blob.read(chunk_size)
                    except sqlite3.OperationalError as exc:  # the row changed under us
                        raise NotFound(f"object {object_id} changed while being read") from exc
                if not chunk:
                    return
                offset += len(chunk)
                yield chunk
        finally:
            with self._lock:
                if not self._closed:
                    blob.close()
