"""Private scratch directories named after their owning process, and a sweep of dead ones.

A daemon's scratch directory (objects of a run, a simulation's context store) is removed at
``close`` or at interpreter exit, but a process killed with SIGKILL (a fault test, an OOM kill,
a crash) runs neither, and the directory, gigabytes at large models, stays behind for good.
`make_scratch` names each directory ``<prefix><pid>-<random>`` and, before making a new one,
sweeps from the same parent the directories with that prefix whose process is gone.

A sweep removes only directories (never a symlink, never followed) owned by the current user,
whose name parses as ``<prefix><pid>-...``. A PID can be reused: a directory whose PID belongs
to a live process again is kept, the safe side, until a later sweep finds that process gone.
PIDs are only meaningful in one PID namespace: a parent shared by processes of different
containers (same uid) is not a place for these directories. Races with another sweeper (the
directory vanishes midway) and a directory that cannot be removed are ignored: a sweep never
fails the creation of a new directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

_PRIVATE_DIR = 0o700


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (signal 0: nothing is sent, only checked)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True


def _owner_pid(name: str, prefix: str) -> int | None:
    """The PID in ``<prefix><pid>-<random>``, or None if ``name`` is not of that form."""
    if not name.startswith(prefix):
        return None
    digits, dash, _ = name[len(prefix) :].partition("-")
    if not dash or not digits.isascii() or not digits.isdecimal():
        return None
    pid = int(digits)
    return pid if pid > 0 else None  # 0 and below would address process groups in os.kill


def sweep_scratch(
    prefix: str, parent: Path, *, alive: Callable[[int], bool] = pid_alive
) -> list[Path]:
    """Remove the directories ``<prefix><pid>-*`` in ``parent`` of dead PIDs; those removed."""
    removed: list[Path] = []
    uid = os.getuid()
    try:
        with os.scandir(parent) as listing:
            entries = list(listing)
    except OSError:
        return removed
    for entry in entries:
        pid = _owner_pid(entry.name, prefix)
        if pid is None or pid == os.getpid():
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue  # gone meanwhile
        if alive(pid):
            continue
        try:
            shutil.rmtree(entry.path)  # refuses a symlink; fd-based, follows none inside
        except OSError:
            continue  # another sweeper got there first, or not ours to remove: next sweep
        removed.append(Path(entry.path))
    return removed


def make_scratch(
    prefix: str, parent: Path | None = None, *, alive: Callable[[int], bool] = pid_alive
) -> Path:
    """A fresh private (0700) directory ``<prefix><pid>-<random>`` in ``parent`` (default: the
    system's temporary directory), after sweeping the leftovers of dead processes there."""
    base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    sweep_scratch(prefix, base, alive=alive)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))
    os.chmod(path, _PRIVATE_DIR)  # mkdtemp makes it 0700 already; this says it
    return path
