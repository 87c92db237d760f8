"""An app process's shortcut to its daemon's object files (isolation subprocess).

The SuperNode's own children run on its machine as its user, so instead of moving a model over
``PullObjects``/``PushObjects`` (a gRPC hop: several copies of every byte, on both sides), the
app process maps the objects of the run from the directory the SuperNode names in
``PullAppInputs`` (``object_dir``), and writes its reply's objects there (whole, then renamed
into place) for the SuperNode to find. Whatever is not there travels over gRPC as before.
A ServerApp process maps the SuperLink's checked object files likewise (read only), and puts
what it pushes in the run's staging directory (``staging_dir``), where the SuperLink checks each
file against its id before taking it in. An array made in the spool (`corolla.records._spool`)
is placed by a hard link: no byte is copied.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from corolla.common.errors import CorollaError
from corolla.common.objectfiles import PartFile, file_name
from corolla.common.objects import Buffer
from corolla.records import _spool


class LocalObjects:
    """Objects of a daemon's directory: read by mapping them, placed (if this process may
    write there) whole."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def read(self, object_ids: Iterable[str]) -> dict[str, memoryview]:
        """The objects found in the directory, mapped read-only (no copy; a mapping stays
        valid after the SuperNode deletes the file). Missing ones are left out."""
        found: dict[str, memoryview] = {}
        for object_id in object_ids:
            try:
                fd = os.open(self._directory / file_name(object_id), os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                size = os.fstat(fd).st_size
                found[object_id] = (
                    memoryview(mmap.mmap(fd, size, access=mmap.ACCESS_READ))
                    if size
                    else memoryview(b"")
                )
            finally:
                os.close(fd)
        return found

    def place(self, objects: Mapping[str, Buffer]) -> None:
        """Put each object not there yet into the directory: a hard link to the spool file
        that holds it (no copy, see `corolla.records._spool`), else written whole, then
        renamed."""
        for object_id, data in objects.items():
            target = self._directory / file_name(object_id)
            if target.exists():
                continue
            if _linked(_spool.file_of(data), target):
                continue
            part = PartFile(self._directory)
            try:
                part.write(memoryview(data).cast("B"))
                part.place(target)
            except CorollaError:
                part.discard()
                raise


def _linked(spooled: Path | None, target: Path) -> bool:
    """Whether ``target`` now names the spool file ``spooled`` holding the object (or an
    object put there meanwhile); False if it must be written (no spool file, another file
    system, the file gone)."""
    if spooled is None:
        return False
    try:
        os.link(spooled, target)
    except FileExistsError:
        return True
    except OSError:
        return False
    return True
