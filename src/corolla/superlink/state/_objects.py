"""The object part of `SqliteLinkState`: payloads as SQLite blobs (``:memory:``) or as files
beside a file database, read back in chunks without loading an object whole."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

from corolla.common.errors import InvalidArgument, NotFound
from corolla.superlink.state._files import ObjectFiles
from corolla.superlink.state._schema import existing, fetch_run

_COPY_CHUNK = 1 << 20  # bytes copied into an object blob at a time


class ObjectStore:
    """Mixed into `SqliteLinkState`, which provides the connection, its lock and the files."""

    _files: ObjectFiles | None
    _lock: contextlib.AbstractContextManager[object]
    _closed: bool

    def _db(self, *, write: bool = False) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # provided by SqliteLinkState

    # -- objects -------------------------------------------------------------------------------
    def store_object(self, run_id: int, object_id: str, data: bytes | memoryview) -> None:
        if not object_id:
            raise InvalidArgument("an object needs an id")
        try:
            view = memoryview(data).cast("B")
        except TypeError as exc:
            raise InvalidArgument(f"object {object_id}: data is not a contiguous buffer") from exc
        if self._files is None:
            self._store_blob(run_id, object_id, view)
            return
        with self._db() as conn:
            fetch_run(conn, run_id)
            present = existing(conn, "objects", "object_id", [object_id])
        if not present:
            self._files.write(object_id, view)  # outside the lock: the slow part
        with self._db(write=True) as conn:
            fetch_run(conn, run_id)
            if not existing(conn, "objects", "object_id", [object_id]):
                if not self._files.exists(object_id):  # deleted by a concurrent cleanup
                    self._files.write(object_id, view)
                conn.execute(
                    "INSERT INTO objects (object_id, run_id, size, data, in_file) "
                    "VALUES (?, ?, ?, x'', 1)",
                    (object_id, run_id, view.nbytes),
                )
            self._add_ref(conn, object_id, run_id)

    def _store_blob(self, run_id: int, object_id: str, view: memoryview) -> None:
        with self._db(write=True) as conn:
            fetch_run(conn, run_id)
            if not existing(conn, "objects", "object_id", [object_id]):
                # Reserve the blob, then copy in chunks: SQLite never holds a second full copy.
                cursor = conn.execute(
                    "INSERT INTO objects (object_id, run_id, size, data) "
                    "VALUES (?, ?, ?, zeroblob(?))",
                    (object_id, run_id, view.nbytes, view.nbytes),
                )
                assert cursor.lastrowid is not None  # every INSERT sets it
                with conn.blobopen("objects", "data", cursor.lastrowid) as blob:
                    for start in range(0, view.nbytes, _COPY_CHUNK):
                        blob.write(view[start : start + _COPY_CHUNK])
            self._add_ref(conn, object_id, run_id)

    @staticmethod
    def _add_ref(conn: sqlite3.Connection, object_id: str, run_id: int) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO object_refs (object_id, run_id) VALUES (?, ?)",
            (object_id, run_id),
        )

    def missing_objects(self, object_ids: list[str]) -> list[str]:
        with self._db() as conn:
            present = existing(conn, "objects", "object_id", object_ids)
        return [oid for oid in dict.fromkeys(object_ids) if oid not in present]

    def object_size(self, object_id: str) -> int:
        with self._db() as conn:
            query = "SELECT size FROM objects WHERE object_id = ?"
            row = conn.execute(query, (object_id,)).fetchone()
        if row is None:
            raise NotFound(f"object {object_id} not found")
        return int(row[0])

    def read_object(self, object_id: str, chunk_size: int) -> Iterator[bytes]:
        if chunk_size < 1:
            raise InvalidArgument(f"chunk_size must be >= 1, not {chunk_size}")
        with self._db() as conn:
            query = "SELECT size, in_file FROM objects WHERE object_id = ?"
            row = conn.execute(query, (object_id,)).fetchone()
        if row is None:
            raise NotFound(f"object {object_id} not found")
        if row[1] and self._files is not None:
            return self._files.read(object_id, chunk_size)
        return self._object_chunks(object_id, int(row[0]), chunk_size)

    def _object_chunks(self, object_id: str, size: int, chunk_size: int) -> Iterator[bytes]:
        # One blob handle for the whole read: reopening it per chunk makes SQLite walk the
        # overflow-page chain from the start each time (quadratic in the object's size).
        # The lock is held per chunk, never while the consumer handles one.
        with self._db() as conn:
            query = "SELECT rowid FROM objects WHERE object_id = ?"
            row = conn.execute(query, (object_id,)).fetchone()
            if row is None:
                raise NotFound(f"object {object_id} was deleted while being read")
            blob = conn.blobopen("objects", "data", row[0], readonly=True)
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

    def delete_run_objects(self, run_id: int) -> int:
        # An object stays while another run stored it or references it from a message.
        with self._db(write=True) as conn:
            fetch_run(conn, run_id)
            doomed = [
                (row[0], row[1])
                for row in conn.execute(
                    "SELECT object_id, in_file FROM objects WHERE object_id IN "
                    "(SELECT object_id FROM object_refs WHERE run_id = ?) AND NOT EXISTS "
                    "(SELECT 1 FROM object_refs r WHERE r.object_id = objects.object_id "
                    "AND r.run_id != ?)",
                    (run_id, run_id),
                )
            ]
            conn.executemany("DELETE FROM objects WHERE object_id = ?", [(d[0],) for d in doomed])
            conn.execute("DELETE FROM object_refs WHERE run_id = ?", (run_id,))
            if self._files is not None:  # under the lock: a concurrent store re-checks the file
                self._files.delete(object_id for object_id, in_file in doomed if in_file)
        return len(doomed)
