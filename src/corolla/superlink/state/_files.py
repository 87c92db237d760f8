"""Object payloads as files beside a file database (``<database>.objects/``).

Writing a large payload into a file costs a fraction of writing it into an SQLite blob, and it
happens outside the database lock, so other state calls are not held up while a model lands.
The database keeps the object's row (id, run, size); the file name is the sha256 of the id.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

_TMP_PREFIX = ".tmp-"


class ObjectFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, object_id: str) -> Path:
        return self.directory / hashlib.sha256(object_id.encode()).hexdigest()

    def write(self, object_id: str, data: memoryview) -> None:
        """Atomically (temp file, then rename): a reader never sees half an object."""
        tmp = self.directory / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with tmp.open("wb") as out:
                out.write(data)
            os.replace(tmp, self.path(object_id))
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def exists(self, object_id: str) -> bool:
        return self.path(object_id).exists()

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
        """Delete files no row refers to (left by a crash between file and row); returns how
        many were removed."""
        keep = {self.path(object_id).name for object_id in known_ids}
        removed = 0
        for entry in self.directory.iterdir():
            if entry.name not in keep:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed += 1
        return removed
