"""The receiving side: verify a FAB, unpack it safely, install it once per hash."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from corolla.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from corolla.fab._manifest import MANIFEST_PATH, MAX_MANIFEST_SIZE, decode_manifest
from corolla.fab._zipcheck import DEFAULT_MAX_RATIO, RATIO_CHECK_FLOOR, Limits, check_members
from corolla.fab.config import PYPROJECT, AppConfig, load_app_config, parse_app_config

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_MAX_TOTAL_SIZE = 500 * MiB
DEFAULT_MAX_MEMBER_SIZE = 100 * MiB
DEFAULT_MAX_MEMBERS = 10_000

_CHUNK = 64 * 1024
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, ValueError)


@dataclass(frozen=True)
class InstalledApp:
    """An app unpacked under ``apps_root/<fab_hash>/``."""

    path: Path
    fab_hash: str
    config: AppConfig


def verify_fab(data: bytes, expected_hash: str) -> None:
    """Raise :class:`InvalidArgument` unless ``sha256(data)`` is ``expected_hash``."""
    expected = _normalize_hash(expected_hash)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise InvalidArgument(f"FAB hash mismatch: expected {expected}, got {actual}")


def install_fab(data: bytes, fab_hash: str, apps_root: Path) -> InstalledApp:
    """Verify ``data`` and unpack it into ``apps_root/<fab_hash>/`` (idempotent, race-safe)."""
    fab_hash = _normalize_hash(fab_hash)
    verify_fab(data, fab_hash)
    dest = apps_root / fab_hash
    installed = _load_installed(dest, fab_hash)
    if installed is not None:
        logger.debug("FAB %s already installed", fab_hash)
        return installed
    try:
        config = unpack_fab(data, dest)
    except AlreadyExists:  # another process won the race
        installed = _load_installed(dest, fab_hash, repair=False)
        if installed is None:
            raise FailedPrecondition(f"{dest}: exists but is not a complete install") from None
        return installed
    logger.info("Installed FAB %s", fab_hash)
    return InstalledApp(path=dest, fab_hash=fab_hash, config=config)


def unpack_fab(
    data: bytes,
    dest: Path,
    *,
    max_total_size: int = DEFAULT_MAX_TOTAL_SIZE,
    max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_ratio: int = DEFAULT_MAX_RATIO,
) -> AppConfig:
    """Check and extract a FAB into the new directory ``dest``, all or nothing."""
    limits = Limits(max_total_size, max_member_size, max_members, max_ratio)
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise AlreadyExists(f"{dest}: already exists")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as exc:
        raise InvalidArgument(f"not a valid FAB: not a zip archive ({exc})") from exc
    with zf:
        members = check_members(zf.infolist(), limits)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
        try:
            config = _extract(zf, members, tmp, limits)
            _publish(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return config


def _normalize_hash(fab_hash: str) -> str:
    normalized = fab_hash.strip().lower()
    if not _HASH_RE.fullmatch(normalized):
        raise InvalidArgument(f"invalid FAB hash {fab_hash!r}: expected 64 hex digits (sha256)")
    return normalized


@dataclass
class _Budget:
    """Bytes still allowed across the whole archive, counted as they are decompressed."""

    remaining: int


def _extract(
    zf: zipfile.ZipFile, files: list[zipfile.ZipInfo], tmp: Path, limits: Limits
) -> AppConfig:
    by_name = {info.filename: info for info in files}
    if MANIFEST_PATH not in by_name:
        raise InvalidArgument(f"not a valid FAB: manifest {MANIFEST_PATH} is missing")
    if PYPROJECT not in by_name:
        raise InvalidArgument(f"not a valid FAB: {PYPROJECT} is missing")
    budget = _Budget(limits.max_total_size)
    cap = min(limits.max_member_size, MAX_MANIFEST_SIZE)
    _stream(zf, by_name[MANIFEST_PATH], tmp, limits, budget, cap=cap)
    manifest = decode_manifest((tmp / MANIFEST_PATH).read_bytes())
    for name in sorted(manifest.keys() ^ (by_name.keys() - {MANIFEST_PATH})):
        where = "listed in the manifest but absent" if name in manifest else "not in the manifest"
        raise InvalidArgument(f"FAB member {name!r} refused: {where}")

    def extract_checked(info: zipfile.ZipInfo) -> None:
        size, digest = _stream(zf, info, tmp, limits, budget, cap=limits.max_member_size)
        entry = manifest[info.filename]
        if (size, digest) != (entry.size, entry.sha256):
            raise InvalidArgument(f"FAB member {info.filename!r} does not match the manifest")

    extract_checked(by_name[PYPROJECT])  # first, to fail fast on a bad app
    config = parse_app_config((tmp / PYPROJECT).read_bytes(), source=f"FAB {PYPROJECT}")
    for info in files:
        if info.filename not in (PYPROJECT, MANIFEST_PATH):
            extract_checked(info)
    return config


def _stream(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    tmp: Path,
    limits: Limits,
    budget: _Budget,
    *,
    cap: int,
) -> tuple[int, str]:
    """Copy one member counting real bytes (headers may lie); returns (size, sha256)."""
    refuse = f"FAB member {info.filename!r} refused:"
    target = tmp.joinpath(*info.filename.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as dst, zf.open(info) as src:
            while chunk := src.read(_CHUNK):
                size += len(chunk)
                budget.remaining -= len(chunk)
                if size > info.file_size:
                    raise InvalidArgument(f"{refuse} more bytes than its header declares")
                if size > cap:
                    raise InvalidArgument(f"{refuse} larger than {cap} bytes")
                if budget.remaining < 0:
                    raise InvalidArgument(f"{refuse} FAB over {limits.max_total_size} bytes")
                if size > RATIO_CHECK_FLOOR and size > info.compress_size * limits.max_ratio:
                    raise InvalidArgument(f"{refuse} compression ratio over {limits.max_ratio}")
                digest.update(chunk)
                dst.write(chunk)
    except _ZIP_ERRORS as exc:
        raise InvalidArgument(f"FAB member {info.filename!r} is corrupt: {exc}") from exc
    if size != info.file_size:
        raise InvalidArgument(f"{refuse} fewer bytes than its header declares")
    return size, digest.hexdigest()


def _publish(tmp: Path, dest: Path) -> None:
    """Atomically move the finished tree into place."""
    try:
        os.rename(tmp, dest)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            raise AlreadyExists(f"{dest}: already exists") from exc
        raise


def _load_installed(dest: Path, fab_hash: str, *, repair: bool = True) -> InstalledApp | None:
    """The install at ``dest`` if it is complete; an incomplete one is moved away."""
    if not dest.exists() and not dest.is_symlink():
        return None
    if _is_complete(dest):
        return InstalledApp(path=dest, fab_hash=fab_hash, config=load_app_config(dest))
    if not repair:
        return None
    logger.warning("Removing incomplete install of FAB %s", fab_hash)
    aside = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".stale", dir=dest.parent))
    with contextlib.suppress(FileNotFoundError):
        os.rename(dest, aside / "app")
    shutil.rmtree(aside, ignore_errors=True)
    return None


def _is_complete(dest: Path) -> bool:
    if dest.is_symlink() or not dest.is_dir():
        return False
    try:
        manifest = decode_manifest((dest / MANIFEST_PATH).read_bytes())
    except (OSError, InvalidArgument):
        return False
    for entry in manifest.values():
        path = dest / entry.path
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_size != entry.size:
                return False
        except OSError:
            return False
    return True
