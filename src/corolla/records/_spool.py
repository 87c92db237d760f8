"""Large array buffers as files in the daemon's object directory (app processes, isolation
subprocess).

An app process that shares its daemon's machine and user (see `corolla.runtime.localobjects`)
makes the arrays it sends (a ClientApp's reply, a ServerApp's model) straight into files in a
directory the daemon names: each buffer of at least `MIN_BYTES` is a shared mapping of a file
of its own there. Sending such an array is then a hard link under the object's name, which
the daemon takes in, instead of copying every byte into a file (or over gRPC) a second time:
on a machine where fresh memory is dear (a VM backs every new page on first touch), one copy
of a model is made once, not twice.

Without a directory (outside `using`, or ``None``), or if the file cannot be made (no room,
directory gone), buffers are made in memory as before: nothing fails for want of a spool.
A buffer's file is deleted when the buffer is garbage-collected (its links, under the object's
name, stay the daemon's).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import threading
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

MIN_BYTES = 1 << 20  # smaller buffers stay in memory: a file each would cost more than a copy
_PREFIX = ".spool-"

_directory: Path | None = None
_lock = threading.Lock()
_files: dict[tuple[int, int], Path] = {}  # (address, size) of a live mapping -> its file


@contextlib.contextmanager
def using(directory: Path | None) -> Iterator[None]:
    """Make large buffers of this process in ``directory`` (None: in memory) inside the
    block (the process's one run: the directory is the run's)."""
    global _directory
    before, _directory = _directory, directory
    try:
        yield
    finally:
        _directory = before


def allocate(nbytes: int) -> memoryview | None:
    """A writable buffer of ``nbytes`` zero bytes in a spool file, if a directory is in use,
    the buffer is large and the file can be made; else None (make it in memory)."""
    where = _directory
    if where is None or nbytes < MIN_BYTES:
        return None
    path = where / f"{_PREFIX}{uuid.uuid4().hex}"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        log.debug("no spool file in %s (%s): buffer in memory", where, exc)
        return None
    try:
        os.posix_fallocate(fd, 0, nbytes)  # no room shows here, not as SIGBUS on a write
        mapping = mmap.mmap(fd, nbytes, access=mmap.ACCESS_WRITE)
    except OSError as exc:
        log.debug("no room for %d bytes in %s (%s): buffer in memory", nbytes, where, exc)
        _unlink(path)
        return None
    finally:
        os.close(fd)
    view = memoryview(mapping)
    key = (_address(view), nbytes)
    with _lock:
        _files[key] = path
    weakref.finalize(mapping, _forget, key, path)
    return view


def zeros(shape: tuple[int, ...], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """``np.zeros(shape, dtype)``, its buffer from `allocate`."""
    count = int(np.prod(shape, dtype=np.int64))
    buffer = allocate(count * dtype.itemsize)
    if buffer is None:
        return np.zeros(shape, dtype=dtype)
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)


def file_of(data: Any) -> Path | None:
    """The spool file holding exactly the bytes of the buffer ``data`` (all of one mapping,
    read-only views of it included), if there is one."""
    try:
        view = memoryview(data)
    except TypeError:
        return None
    if view.nbytes < MIN_BYTES or not view.c_contiguous:
        return None
    with _lock:
        return _files.get((_address(view), view.nbytes))


def _address(view: memoryview) -> int:
    address: int = np.frombuffer(view.cast("B"), dtype=np.uint8).__array_interface__["data"][0]
    return address


def _forget(key: tuple[int, int], path: Path) -> None:
    with _lock:
        if _files.get(key) == path:
            del _files[key]
    _unlink(path)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
