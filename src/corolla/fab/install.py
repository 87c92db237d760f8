"""The receiving side: verify a FAB, check or unpack it safely, install it once per hash.

`install_fab` trusts nothing on disk: the FAB's bytes must hash to the hash the run names; a
new install is unpacked into a temporary directory, given its marker and lock file and renamed
into ``apps_root/<hash>`` in one step; an existing directory is used only if it is exactly the
FAB (`corolla.fab._tree.check_tree`: marker, every file's sha256, nothing more), else it is
removed and installed afresh (the check reads every file once: bounded by the unpacked-size
limit, and app code is small). The returned `InstalledApp` holds a lease on the install, so that
garbage collection (`corolla.fab.gc`) never removes it while it is in use.

Out of scope: a process running as the same user while the app runs (it could change the
files after the check, or the Corolla installation itself); $COROLLA_HOME/apps is 0700 so that
no other user can.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from corolla.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from corolla.fab._extract import extract, open_fab, read_manifest
from corolla.fab._lease import AppLease, create_lock, has_lock_file, lock_shared, remove_tree
from corolla.fab._tree import check_tree, write_marker
from corolla.fab.config import AppConfig, load_app_config
from corolla.fab.limits import FabLimits

logger = logging.getLogger(__name__)

APPS_MODE = 0o700  # $COROLLA_HOME/apps: apps are code, only their owner may read or change them
ATTEMPTS = 4  # rounds of "reuse, else install" when other processes change the directory
_HASH_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class InstalledApp:
    """An app installed under ``apps_root/<fab_hash>/``, in use while ``lease`` is held."""

    path: Path
    fab_hash: str
    config: AppConfig
    lease: AppLease | None = field(default=None, compare=False, repr=False)

    def release(self) -> None:
        """Done with the install: garbage collection may remove it once it is old."""
        if self.lease is not None:
            self.lease.release()


def verify_fab(data: bytes, expected_hash: str) -> None:
    """Raise :class:`InvalidArgument` unless ``sha256(data)`` is ``expected_hash``."""
    expected = _normalize_hash(expected_hash)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise InvalidArgument(f"FAB hash mismatch: expected {expected}, got {actual}")


def inspect_fab(data: bytes, *, limits: FabLimits | None = None) -> AppConfig:
    """Check a FAB completely (limits, every header, every byte against the manifest, the app
    config) without writing anything; returns its app config."""
    return extract(data, limits or FabLimits(), None).config


def unpack_fab(data: bytes, dest: Path, *, limits: FabLimits | None = None) -> AppConfig:
    """Check and extract a FAB into the new directory ``dest``, all or nothing."""
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise AlreadyExists(f"{dest}: already exists")
    open_fab(data, limits or FabLimits())[0].close()  # refuse on the headers before any mkdir
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        config = extract(data, limits or FabLimits(), tmp).config
        _publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return config


def install_fab(
    data: bytes, fab_hash: str, apps_root: Path, *, limits: FabLimits | None = None
) -> InstalledApp:
    """Verify ``data`` against ``fab_hash`` and install it as ``apps_root/<fab_hash>/``
    (once per hash, race-safe); the result holds a lease on the install (`InstalledApp`)."""
    fab_hash = _normalize_hash(fab_hash)
    verify_fab(data, fab_hash)
    limits = limits or FabLimits()
    open_fab(data, limits)[0].close()  # even a FAB installed before must pass today's limits
    manifest = read_manifest(data)
    ensure_private_dir(apps_root)
    dest = apps_root / fab_hash
    for _ in range(ATTEMPTS):
        if os.path.lexists(dest):
            installed = _reuse(dest, fab_hash, manifest)
        else:
            installed = _install_new(data, dest, fab_hash, limits)
        if installed is not None:
            return installed
    raise FailedPrecondition(f"{dest}: cannot install, the directory keeps changing")


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700), or tighten an existing one of ours to 0700."""
    path.mkdir(mode=APPS_MODE, parents=True, exist_ok=True)
    info = os.stat(path)
    if stat.S_IMODE(info.st_mode) != APPS_MODE and info.st_uid == os.geteuid():
        os.chmod(path, APPS_MODE)


def _reuse(dest: Path, fab_hash: str, manifest: bytes) -> InstalledApp | None:
    """The install at ``dest`` if it is exactly this FAB; otherwise it is removed (None)."""
    lease = lock_shared(dest)
    if lease is None:
        if os.path.lexists(dest) and not has_lock_file(dest):
            logger.warning("FAB %s: removing %s, not a complete install", fab_hash, dest)
            remove_tree(dest)
        return None  # no install (any more), or replaced meanwhile: look again
    problem = check_tree(dest, fab_hash, manifest)
    if problem is not None:
        lease.release()
        logger.warning("FAB %s: removing the install at %s: %s", fab_hash, dest, problem)
        remove_tree(dest)
        return None
    lease.touch()
    logger.debug("FAB %s already installed", fab_hash)
    return InstalledApp(path=dest, fab_hash=fab_hash, config=load_app_config(dest), lease=lease)


def _install_new(data: bytes, dest: Path, fab_hash: str, limits: FabLimits) -> InstalledApp | None:
    """Unpack into a temporary directory and rename it into place; None if another process
    put an install there first."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{fab_hash}.", suffix=".partial", dir=dest.parent))
    lease: AppLease | None = None
    try:
        checked = extract(data, limits, tmp)
        write_marker(tmp, fab_hash, checked.manifest)
        lease = create_lock(tmp)
        _publish(tmp, dest)
    except AlreadyExists:
        if lease is not None:
            lease.release()
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    except BaseException:
        if lease is not None:
            lease.release()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Installed FAB %s", fab_hash)
    return InstalledApp(path=dest, fab_hash=fab_hash, config=checked.config, lease=lease)


def _normalize_hash(fab_hash: str) -> str:
    normalized = fab_hash.strip().lower()
    if not _HASH_RE.fullmatch(normalized):
        raise InvalidArgument(f"invalid FAB hash {fab_hash!r}: expected 64 hex digits (sha256)")
    return normalized


def _publish(tmp: Path, dest: Path) -> None:
    """Atomically move the finished tree into place."""
    try:
        os.rename(tmp, dest)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            raise AlreadyExists(f"{dest}: already exists") from exc
        raise
