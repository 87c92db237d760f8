"""Garbage collection of installed apps (``$COROLLA_HOME/apps/<hash>``).

The scheme, simple on purpose:

- Every use of an install (installing it, or reusing it) holds a shared lock on its lock file
  (``.corolla/lock``) for as long as the app process uses it, and sets that file's modification
  time: its last use. The kernel drops the lock when the process exits, however it exits.
- `collect` removes every install whose last use is older than ``max_age`` and that nobody
  holds: it takes the exclusive lock without waiting (an install in use is never removed),
  checks the last use again under the lock, and moves the directory aside in one rename
  before deleting it. A process that opened the lock file just before notices the move and
  installs afresh.
- Temporary directories left by a crashed install (``.<hash>.*.partial``) or an interrupted
  removal (``.*.stale``) go once they are older than `STALE_TEMP_AGE`.

App processes run `collect` after each install (`corolla.runtime.loader`), with ``max_age``
from ``$COROLLA_APPS_MAX_AGE`` (seconds; default 7 days): no background thread, and a machine
that runs nothing keeps what it has.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Collection, Mapping
from pathlib import Path

from corolla.common.errors import InvalidArgument
from corolla.fab._lease import has_lock_file, last_used, lock_exclusive, remove_tree

logger = logging.getLogger(__name__)

MAX_AGE_ENV = "COROLLA_APPS_MAX_AGE"
DEFAULT_MAX_AGE = 7 * 24 * 3600.0
STALE_TEMP_AGE = 3600.0  # s; an install takes seconds, a removal less
_HASH_RE = re.compile(r"[0-9a-f]{64}")


def max_age_from_env(environ: Mapping[str, str]) -> float:
    """``$COROLLA_APPS_MAX_AGE`` (seconds, > 0), else the default (7 days)."""
    raw = environ.get(MAX_AGE_ENV, "")
    if not raw:
        return DEFAULT_MAX_AGE
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise InvalidArgument(f"{MAX_AGE_ENV} must be a number of seconds > 0, not {raw!r}")
    return value


def collect(
    apps_root: Path, *, max_age: float, keep: Collection[str] = (), now: float | None = None
) -> list[str]:
    """Remove the installs under ``apps_root`` unused for ``max_age`` seconds and not in use
    (never those named in ``keep``); returns the hashes removed."""
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = sorted(os.scandir(apps_root), key=lambda e: e.name)
    except FileNotFoundError:
        return removed
    for entry in entries:
        path = Path(entry.path)
        if _HASH_RE.fullmatch(entry.name):
            if entry.name not in keep and _remove_if_unused(path, now - max_age):
                removed.append(entry.name)
        elif entry.name.startswith(".") and entry.name.endswith((".partial", ".stale")):
            with contextlib.suppress(OSError):
                if os.lstat(path).st_mtime < now - STALE_TEMP_AGE:
                    shutil.rmtree(path, ignore_errors=True)
    if removed:
        logger.info("Removed %d unused app install(s) from %s", len(removed), apps_root)
    return removed


def _remove_if_unused(tree: Path, cutoff: float) -> bool:
    if last_used(tree) >= cutoff:
        return False
    lease = lock_exclusive(tree)
    if lease is None:
        if has_lock_file(tree):
            return False  # in use
        remove_tree(tree)  # no lock file: not an install anybody can be using
        return True
    with lease:
        if last_used(tree) >= cutoff:  # used since we looked
            return False
        remove_tree(tree)
    return True
