"""`ContextStore`: the contexts of many virtual nodes as encoded bytes in a SQLite file.

A simulation of 10,000 nodes must not hold 10,000 decoded contexts (each with its state) in
memory. The store keeps each node's context as its wire encoding (`context_to_bytes`) in a
SQLite file inside a private temporary directory; SQLite's page cache (bounded) keeps the hot
ones in memory. The file is scratch space: no journal, no fsync, removed on `close` (or, after
a SIGKILL, by the next store made in the same parent directory: `corolla.common.scratch`).
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import threading
from pathlib import Path

from corolla.common.errors import FailedPrecondition
from corolla.common.scratch import make_scratch
from corolla.proto.v1 import message_pb2 as mpb
from corolla.records import Context
from corolla.records.serde import context_from_proto, context_to_proto

SCRATCH_PREFIX = "corolla-sim-"  # + <pid>-<random>: see corolla.common.scratch
_CACHE_KIB = 16 * 1024  # SQLite page cache of the store: 16 MiB at most
_ALL_INLINE = sys.maxsize  # every array inside the encoding: one blob per context


def context_to_bytes(context: Context) -> bytes:
    """``context`` in its protobuf wire form, every array inline (one self-contained blob)."""
    return context_to_proto(context, inline_limit=_ALL_INLINE).SerializeToString()


def context_from_bytes(data: bytes) -> Context:
    """The context `context_to_bytes` encoded."""
    return context_from_proto(mpb.Context.FromString(data))


class ContextStore:
    """Encoded contexts keyed by node id, in ``<tempdir>/contexts.sqlite``.

    Safe to use from several threads (one connection behind a lock; no call waits on anything
    but SQLite itself). ``directory`` is where the temporary directory is made (default: the
    system's temporary directory).
    """

    def __init__(self, directory: Path | None = None) -> None:
        self._dir = make_scratch(SCRATCH_PREFIX, directory)  # sweeps those of dead processes
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self._dir / "contexts.sqlite", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        self._db.execute("CREATE TABLE contexts (node_id INTEGER PRIMARY KEY, data BLOB NOT NULL)")

    @property
    def path(self) -> Path:
        """The temporary directory holding the database (gone after `close`)."""
        return self._dir

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise FailedPrecondition("the context store is closed")
        return self._db

    def get(self, node_id: int) -> bytes | None:
        """The encoded context of ``node_id``, or None if none was stored."""
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT data FROM contexts WHERE node_id = ?", (node_id,))
                .fetchone()
            )
        return None if row is None else bytes(row[0])

    def put(self, node_id: int, data: bytes) -> None:
        """Store (or replace) the encoded context of ``node_id``."""
        with self._lock:
            self._conn().execute(
                "INSERT OR REPLACE INTO contexts (node_id, data) VALUES (?, ?)", (node_id, data)
            )

    def put_many(self, items: list[tuple[int, bytes]]) -> None:
        """Store several encoded contexts in one transaction."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT OR REPLACE INTO contexts (node_id, data) VALUES (?, ?)", items
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._conn().execute("SELECT COUNT(*) FROM contexts").fetchone()
        return int(count)

    def close(self) -> None:
        """Close the database and remove its directory (idempotent)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ContextStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
