"""The object part of the SQL states: payloads as files (beside an SQLite file database, or in
the directory a PostgreSQL state is given) or as SQLite blobs (``:memory:``), received in
pieces and read back in chunks without being held whole.

Quotas are checked when an object is opened, against the size it declares: one object at most
``limits.max_object_bytes``, a run's objects at most ``limits.max_run_object_bytes``, counting
the objects it stored (``run_usage.object_bytes``) and those it is pushing right now.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from corolla.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from corolla.common.objectfiles import PRIVATE_DIR, ObjectFiles, PartFile
from corolla.common.objects import ObjectSink
from corolla.superlink.state._db import (
    FOR_KEY_SHARE,
    FOR_SHARE,
    FOR_UPDATE,
    IN_LIST,
    JSON_ITEMS,
    Conn,
)
from corolla.superlink.state._queries import existing, fetch_run
from corolla.superlink.state.base import RunStatus, StateLimits, describe_bytes


class _Known:
    """The sink of an object stored already: its data is not kept, but the run uses the object
    only once the push is complete (verified by the caller: it proves the run has the content)."""

    def __init__(self, store: ObjectStore, run_id: int, object_id: str) -> None:
        self._store, self._run_id, self._object_id = store, run_id, object_id

    def write(self, data: memoryview) -> None:
        pass

    def commit(self) -> None:
        self._store._commit_known(self._run_id, self._object_id)

    def discard(self) -> None:
        pass


class _Incoming:
    """The sink of a new object: a part file (file database) or a growing buffer (memory)."""

    def __init__(
        self, store: ObjectStore, run_id: int, object_id: str, size: int, part: PartFile | None
    ) -> None:
        self.run_id, self.object_id, self.size, self.part = run_id, object_id, size, part
        self.buffer = bytearray() if part is None else None
        self._store = store
        self._written = 0
        self._open = True

    def write(self, data: memoryview) -> None:
        if not self._open:
            raise FailedPrecondition(f"object {self.object_id} is no longer being stored")
        if self._written + data.nbytes > self.size:
            raise InvalidArgument(f"object {self.object_id}: more data than its declared size")
        if self.part is not None:
            self.part.write(data)
        elif self.buffer is not None:
            self.buffer += data
        self._written += data.nbytes

    def take(self, path: Path) -> None:
        """Make the complete file at ``path`` (of the declared size) the object's, instead of
        writing its data in."""
        if self.part is None or self._written:
            raise FailedPrecondition(f"object {self.object_id}: data written already")
        self.part.discard()
        self.part = PartFile.existing(path)
        self._written = self.size

    def commit(self) -> None:
        if not self._open:
            raise FailedPrecondition(f"object {self.object_id} is no longer being stored")
        if self._written != self.size:
            raise InvalidArgument(
                f"object {self.object_id}: {self._written} of its {self.size} bytes written"
            )
        try:
            self._store._commit(self)
        finally:
            self.discard()

    def discard(self) -> None:
        if self._open:
            self._open = False
            if self.part is not None:
                self.part.discard()  # a no-op once it is in place
            self.buffer = None
            self._store._release(self.run_id, self.size)


class ObjectStore:
    """Mixed into `SqlLinkState`; the backend provides the connection, a lock and the limits.

    An object's row is the lock on its life (PostgreSQL; see `_db`): what adds a use of it
    holds the row ``FOR KEY SHARE``, what may delete it takes it ``FOR UPDATE`` first, then
    looks at its uses."""

    limits: StateLimits
    _lock: contextlib.AbstractContextManager[object]  # guards _pushing
    _closed: bool
    _files: ObjectFiles | None
    _pushing: Counter[int]  # run -> bytes of the objects it is pushing (held against its quota)

    def _db(self, *, write: bool = False) -> contextlib.AbstractContextManager[Conn]:
        raise NotImplementedError  # provided by the backend

    def _insert_blob(self, conn: Conn, run_id: int, object_id: str, view: memoryview) -> None:
        raise NotImplementedError  # provided by a backend that keeps blobs (SQLite :memory:)

    def _object_chunks(self, object_id: str, size: int, chunk_size: int) -> Iterator[bytes]:
        raise NotImplementedError  # provided by a backend that keeps blobs (SQLite :memory:)

    @property
    def object_directory(self) -> Path | None:
        return None if self._files is None else self._files.directory

    def staging_directory(self, run_id: int, *, create: bool = False) -> Path | None:
        if self._files is None:
            return None
        directory = self._staging_root() / f"run-{run_id}"
        if not create:
            return directory if directory.is_dir() else None
        try:
            directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        except OSError as exc:
            raise Unavailable(f"cannot make the staging directory {directory}: {exc}") from exc
        return directory

    def _staging_root(self) -> Path:
        assert self._files is not None  # callers check
        return self._files.directory.with_name(f"{self._files.directory.name}.staging")

    def _open_objects(self, directory: Path | None, *, shared: bool = False) -> None:
        """Set up the payload files (None: blobs), then collect the objects of runs that
        finished before, files no row refers to, and what was left staged. ``shared``: other
        processes may be using the directory now, so only files no row has referred to for
        `ORPHAN_AGE` seconds go, and only the staging of runs that are not active."""
        self._pushing = Counter()
        self._files = None if directory is None else ObjectFiles(directory)
        if self._files is not None and not shared:
            shutil.rmtree(self._staging_root(), ignore_errors=True)
        with self._db(write=True) as conn:
            finished = conn.execute(
                "SELECT DISTINCT r.run_id FROM object_refs r JOIN runs ON runs.run_id = r.run_id "
                "WHERE runs.status = ? ORDER BY r.run_id",
                (RunStatus.FINISHED,),
            ).fetchall()
            for (run_id,) in finished:
                self._forget_run_objects(conn, run_id)
        with self._db() as conn:
            known = [r[0] for r in conn.execute("SELECT object_id FROM objects WHERE in_file = 1")]
            active = {f"run-{r[0]}" for r in conn.execute(_ACTIVE, (RunStatus.FINISHED,))}
        if self._files is not None:
            self._files.remove_orphans(known, min_age=ORPHAN_AGE if shared else 0.0)
            if shared:
                self._remove_staging(keep=active)

    def _remove_staging(self, keep: set[str]) -> None:
        """Remove the staging directories of runs other than ``keep``."""
        with contextlib.suppress(FileNotFoundError):
            for entry in self._staging_root().iterdir():
                if entry.name not in keep:
                    shutil.rmtree(entry, ignore_errors=True)

    # -- storing -------------------------------------------------------------------------------
    def open_object(self, run_id: int, object_id: str, size: int) -> ObjectSink[None]:
        with self._db(write=True) as conn:
            stored = self._admit(conn, run_id, object_id, size)
            if stored is None:
                return _Known(self, run_id, object_id)
            self._hold(run_id, object_id, size, stored)  # SQLite: under its lock, exact
        try:
            part = None if self._files is None else self._files.new_part()
        except BaseException:
            self._release(run_id, size)
            raise
        return _Incoming(self, run_id, object_id, size, part)

    def store_object(self, run_id: int, object_id: str, data: bytes | memoryview) -> None:
        try:
            view = memoryview(data).cast("B")
        except TypeError as exc:
            raise InvalidArgument(f"object {object_id}: data is not a contiguous buffer") from exc
        if self._files is None:  # straight into the blob: no copy in between
            with self._db(write=True) as conn:
                stored = self._admit(conn, run_id, object_id, view.nbytes)
                if stored is not None:
                    self._check_quota(run_id, object_id, view.nbytes, stored)
                    self._insert_blob(conn, run_id, object_id, view)
                self._add_ref(conn, object_id, run_id)
            return
        sink = self.open_object(run_id, object_id, view.nbytes)
        try:
            sink.write(view)  # outside any lock: the slow part
            sink.commit()
        except BaseException:
            sink.discard()
            raise

    def adopt_file(self, run_id: int, object_id: str, path: Path) -> None:
        try:
            source = path.open("rb")
        except OSError as exc:
            raise NotFound(f"object {object_id}: no staged file ({exc})") from exc
        with source:
            size = os.fstat(source.fileno()).st_size
            sink = self.open_object(run_id, object_id, size)  # the checks, and the quota held
            try:
                digest = hashlib.file_digest(source, "sha256").hexdigest()
                if digest != object_id:
                    raise InvalidArgument(f"object {object_id}: staged content does not match")
                if isinstance(sink, _Incoming) and sink.part is not None:
                    sink.take(path)  # the file itself becomes the object: no copy
                sink.commit()
            except BaseException:
                sink.discard()
                raise
            finally:
                with contextlib.suppress(OSError):
                    path.unlink()  # a no-op once taken

    def _admit(self, conn: Conn, run_id: int, object_id: str, size: int) -> int | None:
        """The bytes of objects the run has stored if the object is new, None if it is stored
        already; raises if the run may not store it."""
        if not object_id:
            raise InvalidArgument("an object needs an id")
        if size < 0:
            raise InvalidArgument(f"object {object_id}: size must be >= 0, not {size}")
        limits = self.limits
        if size > limits.max_object_bytes:
            raise ResourceExhausted(
                f"object {object_id} is {size:,} bytes, over the limit of "
                f"{describe_bytes(limits.max_object_bytes)} per object (--max-object-bytes)"
            )
        if fetch_run(conn, run_id).status == RunStatus.FINISHED:
            raise FailedPrecondition(f"run {run_id} is finished: it stores no more objects")
        if existing(conn, "objects", "object_id", [object_id]):
            return None
        query = "SELECT object_bytes FROM run_usage WHERE run_id = ?"
        row = conn.execute(query, (run_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def _hold(self, run_id: int, object_id: str, size: int, stored: int) -> None:
        """Count ``size`` bytes against the run's quota while the object comes (PostgreSQL:
        the pushes of this process; another SuperLink's count once committed)."""
        with self._lock:
            self._check_quota(run_id, object_id, size, stored)
            self._pushing[run_id] += size

    def _check_quota(self, run_id: int, object_id: str, size: int, stored: int) -> None:
        used = stored + self._pushing[run_id]
        quota = self.limits.max_run_object_bytes
        if used + size > quota:
            raise ResourceExhausted(
                f"run {run_id} stores {used:,} bytes of objects; object {object_id} "
                f"({size:,} bytes) would take it over its quota of "
                f"{describe_bytes(quota)} (--max-run-object-bytes)"
            )

    def _commit(self, incoming: _Incoming) -> None:
        run_id, object_id = incoming.run_id, incoming.object_id
        with self._db(write=True) as conn:
            if fetch_run(conn, run_id, FOR_SHARE).status == RunStatus.FINISHED:
                raise FailedPrecondition(f"run {run_id} finished while object {object_id} came")
            if incoming.part is not None and self._files is not None:
                if self._insert_file(conn, run_id, object_id, incoming.size):
                    incoming.part.place(self._files.path(object_id))  # in the transaction: see
                else:  # it came meanwhile                           # `_forget_run_objects`
                    self._use_known(conn, object_id)
            elif incoming.buffer is not None and not existing(
                conn, "objects", "object_id", [object_id]
            ):
                self._insert_blob(conn, run_id, object_id, memoryview(incoming.buffer))
            self._add_ref(conn, object_id, run_id)

    def _commit_known(self, run_id: int, object_id: str) -> None:
        with self._db(write=True) as conn:
            if fetch_run(conn, run_id, FOR_SHARE).status == RunStatus.FINISHED:
                raise FailedPrecondition(f"run {run_id} finished while object {object_id} came")
            self._use_known(conn, object_id)
            self._add_ref(conn, object_id, run_id)

    @staticmethod
    def _use_known(conn: Conn, object_id: str) -> None:
        """Hold the stored object's row (a use of it is added next); `Unavailable` if gone."""
        if not existing(conn, "objects", "object_id", [object_id], FOR_KEY_SHARE):
            raise Unavailable(f"object {object_id} was deleted while it came: push it again")

    def _insert_file(self, conn: Conn, run_id: int, object_id: str, size: int) -> bool:
        """Add the row of an object kept as a file; False if it is there already."""
        cursor = conn.execute(
            "INSERT INTO objects (object_id, run_id, size, data, in_file) "
            "VALUES (?, ?, ?, ?, 1) ON CONFLICT DO NOTHING",
            (object_id, run_id, size, b""),
        )
        if cursor.rowcount == 0:
            return False
        self._count(conn, run_id, size)
        return True

    def _release(self, run_id: int, size: int) -> None:
        with self._lock:
            self._pushing[run_id] -= size
            if self._pushing[run_id] <= 0:
                del self._pushing[run_id]

    @staticmethod
    def _count(conn: Conn, run_id: int, size: int) -> None:
        conn.execute(
            "INSERT INTO run_usage (run_id, object_bytes) VALUES (?, ?) ON CONFLICT (run_id) "
            "DO UPDATE SET object_bytes = run_usage.object_bytes + excluded.object_bytes",
            (run_id, size),
        )

    @staticmethod
    def _add_ref(conn: Conn, object_id: str, run_id: int) -> None:
        conn.execute(
            "INSERT INTO object_refs (object_id, run_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (object_id, run_id),
        )

    # -- reading -------------------------------------------------------------------------------
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

    # -- deleting ------------------------------------------------------------------------------
    def delete_run_objects(self, run_id: int) -> int:
        with self._db(write=True) as conn:
            fetch_run(conn, run_id)
            return self._forget_run_objects(conn, run_id)

    def _forget_run_objects(self, conn: Conn, run_id: int) -> int:
        """Drop the run's uses of objects, and the objects no other run uses (in a write
        transaction: the files go before it commits, so a concurrent store never loses one)."""
        used = [r[0] for r in conn.execute(_RUN_REFS, (run_id,))]
        existing(conn, "objects", "object_id", used, FOR_UPDATE)
        conn.execute("DELETE FROM object_refs WHERE run_id = ?", (run_id,))
        removed = self._delete_unused(conn, used)
        if self._files is not None:
            shutil.rmtree(self._staging_root() / f"run-{run_id}", ignore_errors=True)
        return removed

    def _collect_objects(self, conn: Conn, run_id: int, candidates: Iterable[str]) -> int:
        """Drop the run's uses of those of ``candidates`` (objects of messages just deleted, or
        of a checkpoint just replaced) that no message of the run and not its checkpoint
        references any more, and delete the objects no run uses then; returns how many.
        So a long run keeps the objects of the rounds in flight, not of every round."""
        wanted = sorted(set(candidates))
        if not wanted:
            return 0
        existing(conn, "objects", "object_id", wanted, FOR_UPDATE)
        conn.execute(
            f"DELETE FROM object_refs WHERE run_id = ? AND object_id {IN_LIST} "
            f"AND object_id NOT IN (SELECT j.value FROM messages m, {JSON_ITEMS}(m.object_ids) j "
            "WHERE m.run_id = ?) AND object_id NOT IN "
            f"(SELECT j.value FROM checkpoints c, {JSON_ITEMS}(c.object_ids) j WHERE c.run_id = ?)",
            (run_id, wanted, run_id, run_id),
        )
        return self._delete_unused(conn, wanted)

    def _delete_unused(self, conn: Conn, object_ids: list[str]) -> int:
        """Delete those of ``object_ids`` (their rows held ``FOR UPDATE``) that no run
        references, with their files."""
        doomed = conn.execute(
            f"SELECT object_id, in_file, run_id, size FROM objects WHERE object_id {IN_LIST} "
            "AND NOT EXISTS (SELECT 1 FROM object_refs r WHERE r.object_id = objects.object_id)",
            (list(object_ids),),
        ).fetchall()
        conn.executemany("DELETE FROM objects WHERE object_id = ?", [(d[0],) for d in doomed])
        freed: Counter[int] = Counter()
        for _, _, owner, size in doomed:
            freed[owner] += size
        conn.executemany(
            "UPDATE run_usage SET object_bytes = CASE WHEN object_bytes > ? "
            "THEN object_bytes - ? ELSE 0 END WHERE run_id = ?",
            [(size, size, owner) for owner, size in sorted(freed.items())],
        )
        if self._files is not None:
            self._files.delete(object_id for object_id, in_file, _, _ in doomed if in_file)
        return len(doomed)


_RUN_REFS = "SELECT object_id FROM object_refs WHERE run_id = ?"
_ACTIVE = "SELECT run_id FROM runs WHERE status != ?"
ORPHAN_AGE = 3600.0  # seconds: a file of a shared directory no row names this long is left over
