"""Object payloads as files beside a file database (``<database>.objects/``).

Writing a large payload into a file costs a fraction of writing it into an SQLite blob, and it
happens outside the database lock, so other state calls are not held up while a model lands.
A pushed object is written, chunk by chunk as it arrives, into a temporary file in the same
directory, then renamed into place whole. The database keeps the object's row (id, run, size);
the file name is the sha256 of the id. The directory and the files are the owner's only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from corolla.common.errors import (
    CorollaError,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
)
from corolla.superlink.state._schema import PRIVATE_DIR, PRIVATE_FILE

_TMP_PREFIX = ".tmp-"
_FULL = (errno.ENOSPC, errno.EDQUOT)


def _os_error(action: str, exc: OSError) -> CorollaError:
    if exc.errno in _FULL:
        return ResourceExhausted(f"no room to {action}: {exc}")
    return Unavailable(f"cannot {action}: {exc}")


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


class ObjectFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            os.chmod(directory, PRIVATE_DIR)  # whatever the umask, and for one made before
        except OSError as exc:
            raise FailedPrecondition(f"cannot use {directory} for objects: {exc}") from exc

    def path(self, object_id: str) -> Path:
        return self.directory / hashlib.sha256(object_id.encode()).hexdigest()

    def new_part(self) -> PartFile:
        return PartFile(self.directory)

    def read(self, object_id: str, chunk_size: int) -> Iterator[bytes]:
        """Chunks of the object; an open file stays readable even if it is deleted meanwhile."""
        with self.path(object_id).open("rb") as source:
            while chunk := source.read(chunk_size):
                yield chunk

    def delete(self, object_ids: Iterable[str]) -> None:
        for object_id in object_ids:
            with contextlib.suppress(FileNotFoundError):
                self.path(object_id).unlink()

    def remove_orphans(self, known_ids: Iterable[str]) -> int:
        """Delete files no row refers to (left by a crash between file and row, or parts of
        objects whose push a crash cut short); returns how many were removed."""
        keep = {self.path(object_id).name for object_id in known_ids}
        removed = 0
        for entry in self.directory.iterdir():
            if entry.name not in keep:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed += 1
        return removed
