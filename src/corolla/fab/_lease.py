"""Who uses an installed app: a shared lock on its lock file; an exclusive one to remove it.

Every install holds ``.corolla/lock``. A process using the install holds a shared `flock` on it
(`AppLease`) until it is done (or exits: the kernel drops the lock). Removing an install takes
the exclusive lock without waiting, so an install in use is never removed. The lock file's
modification time is the install's last use. Locks are taken on an open file, then checked to
still be the file at the path (`_same_file`): a process that opened the lock file of an install
moved away meanwhile sees it and looks again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType

from corolla.common.errors import FailedPrecondition

LOCK_PATH = ".corolla/lock"
LOCK_WAIT = 10.0  # s; an exclusive lock is only ever held for one rename
_POLL = 0.01
_NOT_THERE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


class AppLease:
    """A shared lock on one install: while it is held, garbage collection leaves it alone.

    Released by `release` (idempotent), by leaving a ``with`` block, when the object is
    garbage-collected, or when the process exits.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._close = weakref.finalize(self, os.close, fd)

    @property
    def held(self) -> bool:
        return self._close.alive

    def touch(self) -> None:
        """Record a use of the install now (the lock file's modification time)."""
        if self.held:
            os.utime(self._fd)

    def release(self) -> None:
        self._close()

    def __enter__(self) -> AppLease:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def create_lock(tree: Path) -> AppLease:
    """Create the lock file of a new, unpublished install and hold it shared."""
    fd = os.open(tree / LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)  # nobody else knows this file yet
    return AppLease(fd)


def lock_shared(tree: Path, *, timeout: float = LOCK_WAIT) -> AppLease | None:
    """A shared lock on the install at ``tree``; None if it has no lock file, or if it was
    moved away or replaced while we took the lock (the caller looks again)."""
    fd = _open(tree)
    if fd is None:
        return None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FailedPrecondition(
                        f"{tree}: the install stayed locked for removal over {timeout:g} s"
                    ) from None
                time.sleep(_POLL)
        if not _same_file(fd, tree):
            os.close(fd)
            return None
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return AppLease(fd)


def lock_exclusive(tree: Path) -> AppLease | None:
    """The exclusive lock on the install at ``tree`` if nobody uses it, without waiting;
    None if it is in use, or has no lock file."""
    fd = _open(tree)
    if fd is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not _same_file(fd, tree):
        os.close(fd)
        return None
    return AppLease(fd)


def has_lock_file(tree: Path) -> bool:
    return os.path.lexists(tree / LOCK_PATH)


def last_used(tree: Path) -> float:
    """When the install was last used (its lock file's, else its directory's, mtime)."""
    for path in (tree / LOCK_PATH, tree):
        with contextlib.suppress(OSError):
            return os.lstat(path).st_mtime
    return 0.0


def remove_tree(tree: Path) -> None:
    """Move ``tree`` aside in one rename, then delete it: nobody ever sees half of it."""
    aside = Path(tempfile.mkdtemp(prefix=f".{tree.name}.", suffix=".stale", dir=tree.parent))
    with contextlib.suppress(FileNotFoundError):
        os.rename(tree, aside / "app")
    shutil.rmtree(aside, ignore_errors=True)


def _open(tree: Path) -> int | None:
    try:
        return os.open(tree / LOCK_PATH, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _NOT_THERE:
            return None
        raise


def _same_file(fd: int, tree: Path) -> bool:
    try:
        now = os.stat(tree / LOCK_PATH, follow_symlinks=False)
    except OSError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)
