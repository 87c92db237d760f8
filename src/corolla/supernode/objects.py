"""The SuperNode's objects: files on disk, a private directory per run.

Large arrays pass through a SuperNode on their way between the SuperLink and the run's
ClientApp process; here they never sit in memory. Each object pulled from the SuperLink or
pushed by the ClientApp is written into a file as its chunks arrive (`sink`), served from the
file in chunks (`read`), and sent up from a file opened at the moment the reply was accepted
(`open`: readable until closed, even once the object is released here). `NodeObjects` is the
node process's directory (a fresh temporary one, removed at `close` or when the process exits;
one left by a node killed with SIGKILL is swept when the next node makes its own, see
`corolla.common.scratch`);
`RunObjects` is one run's subdirectory, removed when the run is forgotten.
"""

from __future__ import annotations

import shutil
import threading
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path

from corolla.common.errors import NotFound
from corolla.common.objectfiles import FileSink, ObjectFiles, OpenObject
from corolla.common.scratch import make_scratch

OBJECTS_PREFIX = "corolla-supernode-objects-"  # + <pid>-<random>: see corolla.common.scratch


class RunObjects:
    """One run's objects, by id; thread-safe (its lock is its own)."""

    def __init__(self, directory: Path) -> None:
        self._files = ObjectFiles(directory)
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}

    def sink(self, object_id: str, size: int) -> _RunSink:
        """Where an arriving object is written; it is known here once its sink commits."""
        return _RunSink(self, object_id, FileSink(self._files.new_part(), self._path(object_id)))

    @property
    def directory(self) -> Path:
        return self._files.directory

    def _path(self, object_id: str) -> Path:
        return self._files.path(object_id)

    def _committed(self, object_id: str, path: Path) -> None:
        with self._lock:
            self._sizes[object_id] = path.stat().st_size

    def __contains__(self, object_id: object) -> bool:
        with self._lock:
            return object_id in self._sizes

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._sizes)

    def missing(self, object_ids: Iterable[str]) -> list[str]:
        """Those of ``object_ids`` not held. A file the run's own app process placed in the
        directory (isolation subprocess, see `corolla.runtime.localobjects`) is taken in
        here: that process is trusted with the bytes (the SuperLink checks them)."""
        with self._lock:
            missing = [oid for oid in object_ids if oid not in self._sizes]
            for object_id in list(missing):
                try:
                    self._sizes[object_id] = self._path(object_id).stat().st_size
                except FileNotFoundError:
                    continue
                missing.remove(object_id)
            return missing

    def size(self, object_id: str) -> int:
        with self._lock:
            size = self._sizes.get(object_id)
        if size is None:
            raise NotFound(f"unknown object {object_id}")
        return size

    def read(self, object_id: str, chunk_size: int) -> Iterator[bytes]:
        self.size(object_id)  # NotFound for an unknown id
        return self._files.read(object_id, chunk_size)

    def open(self, object_id: str) -> OpenObject:
        self.size(object_id)
        return self._files.open(object_id)

    def release(self, object_ids: Iterable[str]) -> None:
        """Forget objects and delete their files (open ones stay readable until closed)."""
        with self._lock:
            gone = [oid for oid in object_ids if self._sizes.pop(oid, None) is not None]
        self._files.delete(gone)

    def clear(self) -> None:
        """Forget every object and remove the run's directory."""
        with self._lock:
            self._sizes.clear()
        shutil.rmtree(self._files.directory, ignore_errors=True)


class _RunSink:
    """A `FileSink` that records the object in its `RunObjects` once placed."""

    def __init__(self, owner: RunObjects, object_id: str, sink: FileSink) -> None:
        self._owner, self._object_id, self._sink = owner, object_id, sink

    def write(self, data: memoryview) -> None:
        self._sink.write(data)

    def commit(self) -> str:
        self._owner._committed(self._object_id, self._sink.commit())
        return self._object_id

    def discard(self) -> None:
        self._sink.discard()


class NodeObjects:
    """The node process's object directory: private, fresh, one subdirectory per run."""

    def __init__(self, parent: Path | None = None) -> None:
        self.root = make_scratch(OBJECTS_PREFIX, parent)  # sweeps the dirs of dead nodes
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.root, True)

    def for_run(self, run_id: int) -> RunObjects:
        return RunObjects(self.root / f"run-{run_id}")

    def close(self) -> None:
        """Remove the directory and everything in it."""
        self._cleanup()
