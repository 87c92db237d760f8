"""Object payloads as files in a private directory: the SuperLink's (beside a file database,
``<database>.objects/``) and each SuperNode's.

Writing a large payload into a file costs a fraction of writing it into an SQLite blob, it
happens outside any lock, and the bytes stay out of the process's memory (the page cache holds
them). A pushed object is written, chunk by chunk as it arrives, into a temporary file in the
same directory, then renamed into place whole. The file name is the sha256 of the object id
(so no id, however odd, names a path). The directory and the files are the owner's only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from corolla.common.errors import (
    CorollaError,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
)

PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700
_TMP_PREFIX = ".tmp-"
_FULL = (errno.ENOSPC, errno.EDQUOT)


def _os_error(action: str, exc: OSError) -> CorollaError:
    if exc.errno in _FULL:
        return ResourceExhausted(f"no room to {action}: {exc}")
    return Unavailable(f"cannot {action}: {exc}")


def file_name(object_id: str) -> str:
    """The name of an object's file: the sha256 hex of its id (no id, however odd, is a path)."""
    return hashlib.sha256(object_id.encode()).hexdigest()


class PartFile:
    """An object being received: a temporary file, appended to, then moved into place whole."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            self._fd: int | None = os.open(self.path, flags, PRIVATE_FILE)
        except OSError as exc:
            raise _os_error(f"store an object in {directory}", exc) from exc
        try:
            os.fchmod(self._fd, PRIVATE_FILE)  # whatever the umask
        except OSError as exc:
            self.discard()
            raise _os_error(f"make {self.path} private", exc) from exc

    @classmethod
    def existing(cls, path: Path) -> PartFile:
        """A complete file made elsewhere, to `place` (or `discard`) like a part."""
        part = cls.__new__(cls)
        part.path, part._fd = path, None
        return part

    def write(self, data: memoryview) -> None:
        if self._fd is None:
            raise Unavailable(f"{self.path} is closed")
        view = data.cast("B")
        try:
            while view.nbytes:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise _os_error(f"write {self.path}", exc) from exc

    def place(self, target: Path) -> None:
        """Close the file and rename it to ``target`` (atomic: a reader sees all or nothing)."""
        self._close()
        try:
            os.replace(self.path, target)
        except OSError as exc:
            raise _os_error(f"move an object into {target}", exc) from exc

    def discard(self) -> None:
        """Close and delete the file (a no-op once placed or discarded)."""
        self._close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class OpenObject:
    """An object's open file: its size and its chunks, read from the start on every call of
    `chunks` (so a retried send reads it again), in chunks of at most ``chunk_size`` bytes."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self.size = os.fstat(fd).st_size

    def chunks(self, chunk_size: int) -> Iterator[bytes]:
        offset = 0
        while offset < self.size:
            if self._fd is None:
                raise Unavailable("the object's file was closed")
            piece = os.pread(self._fd, min(chunk_size, self.size - offset), offset)
            if not piece:
                raise Unavailable(f"the object's file ended at {offset} of {self.size} bytes")
            offset += len(piece)
            yield piece

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class FileSink:
    """An `ObjectSink` that lands an object as ``target``: written into a part file, moved into
    place once complete (an object already there stays as it is)."""

    def __init__(self, part: PartFile, target: Path) -> None:
        self._part, self._target = part, target

    def write(self, data: memoryview) -> None:
        self._part.write(data)

    def commit(self) -> Path:
        self._part.place(self._target)
        return self._target

    def discard(self) -> None:
        self._part.discard()


class ObjectFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            os.chmod(directory, PRIVATE_DIR)  # whatever the umask, and for one made before
        except OSError as exc:
            raise FailedPrecondition(f"cannot use {directory} for objects: {exc}") from exc

    def path(self, object_id: str) -> Path:
        return self.directory / file_name(object_id)

    def new_part(self) -> PartFile:
        return PartFile(self.directory)

    def read(self, object_id: str, chunk_size: int) -> Iterator[bytes]:
        """Chunks of the object; an open file stays readable even if it is deleted meanwhile."""
        with self.path(object_id).open("rb") as source:
            while chunk := source.read(chunk_size):
                yield chunk

    def open(self, object_id: str) -> OpenObject:
        """The object's file, opened now: readable until closed, even once deleted."""
        try:
            return OpenObject(os.open(self.path(object_id), os.O_RDONLY))
        except OSError as exc:
            raise _os_error(f"open object {object_id}", exc) from exc

    def delete(self, object_ids: Iterable[str]) -> None:
        for object_id in object_ids:
            with contextlib.suppress(FileNotFoundError):
                self.path(object_id).unlink()

    def remove_orphans(self, known_ids: Iterable[str], min_age: float = 0.0) -> int:
        """Delete files no row refers to (left by a crash between file and row, or parts of
        objects whose push a crash cut short) and not changed for ``min_age`` seconds (a
        directory other processes use: theirs may be coming); returns how many were removed."""
        keep = {self.path(object_id).name for object_id in known_ids}
        before = time.time() - min_age
        removed = 0
        for entry in self.directory.iterdir():
            if entry.name not in keep:
                with contextlib.suppress(FileNotFoundError):
                    if min_age and entry.stat().st_mtime > before:
                        continue
                    entry.unlink()
                    removed += 1
        return removed
