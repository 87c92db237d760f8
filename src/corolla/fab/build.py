"""Build a deterministic FAB (a zip archive) from an app directory."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pathspec

from corolla.common.errors import InvalidArgument
from corolla.fab._manifest import MANIFEST_PATH, ManifestEntry, encode_manifest
from corolla.fab._zipcheck import check_members
from corolla.fab.config import PYPROJECT, AppConfig, parse_app_config
from corolla.fab.limits import FabLimits

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_MAX_FILE_SIZE = 10 * MiB
DEFAULT_MAX_TOTAL_SIZE = 100 * MiB
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644
COMPRESS_LEVEL = 6

_EXCLUDED_DIRS = frozenset(
    {".venv", "venv", "__pycache__", ".git", ".corolla"}
    | {".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", ".tox", ".nox"}
)
_EXCLUDED_TOP_DIRS = frozenset({"build", "dist"})  # a subpackage may be called `build`
_EXCLUDED_FILES = frozenset({".DS_Store"})
_EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".fab")
_Specs = list[tuple[str, pathspec.GitIgnoreSpec]]


@dataclass(frozen=True)
class BuiltFab:
    """A built FAB: its bytes, their sha256 and, if written, where."""

    path: Path | None
    data: bytes
    fab_hash: str
    config: AppConfig


def build_fab(
    app_dir: Path,
    out_dir: Path | None = None,
    *,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    max_total_size: int = DEFAULT_MAX_TOTAL_SIZE,
) -> BuiltFab:
    """Zip ``app_dir`` deterministically; write it into ``out_dir`` unless that is None."""
    if not app_dir.is_dir():
        raise InvalidArgument(f"{app_dir}: not a directory")
    pyproject = app_dir / PYPROJECT
    if pyproject.is_symlink() or not pyproject.is_file():
        raise InvalidArgument(f"{pyproject}: file not found (an app needs a {PYPROJECT})")
    members = _read_members(app_dir, collect_files(app_dir), max_file_size, max_total_size)
    config = parse_app_config(members[PYPROJECT], source=str(pyproject))
    data = _zip(members)
    _check_installable(data)
    fab_hash = hashlib.sha256(data).hexdigest()
    path = None if out_dir is None else _write_atomic(out_dir, fab_filename(config, fab_hash), data)
    logger.info("Built FAB %s (%d files, %d bytes)", fab_hash, len(members), len(data))
    return BuiltFab(path=path, data=data, fab_hash=fab_hash, config=config)


def build_fab_bytes(app_dir: Path) -> tuple[bytes, str]:
    """Build in memory; returns ``(archive bytes, sha256 hex)``."""
    fab = build_fab(app_dir)
    return fab.data, fab.fab_hash


def fab_filename(config: AppConfig, fab_hash: str) -> str:
    """``{publisher}.{name}.{version}.{hash[:8]}.fab`` with file-name-safe parts."""
    version = re.sub(r"[^A-Za-z0-9.+_-]+", "-", config.version).strip(".-") or "0"
    return f"{_slug(config.publisher)}.{_slug(config.name)}.{version}.{fab_hash[:8]}.fab"


def collect_files(app_dir: Path) -> list[str]:
    """Sorted POSIX paths (relative to ``app_dir``) of the files a FAB includes."""
    files: list[str] = []
    _walk(app_dir, "", [], files)
    if PYPROJECT not in files:  # always shipped, even if ignored
        files.append(PYPROJECT)
    return sorted(files)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "app"


def _walk(root: Path, rel: str, specs: _Specs, out: list[str]) -> None:
    directory = root / rel
    specs = specs + _load_gitignore(directory, rel)
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise InvalidArgument(f"{directory}: cannot list: {exc.strerror or exc}") from exc
    for entry in entries:
        path = rel + entry.name
        if entry.is_symlink():
            logger.debug("Skipping symlink %s", path)
        elif entry.is_dir(follow_symlinks=False):
            if not _excluded_dir(entry.name, top=not rel) and not _ignored(specs, path + "/"):
                _walk(root, path + "/", specs, out)
        elif (
            entry.is_file(follow_symlinks=False)
            and not _excluded_file(entry.name)
            and not _ignored(specs, path)
        ):
            out.append(_check_name(root, path))


def _excluded_dir(name: str, *, top: bool) -> bool:
    return (
        name in _EXCLUDED_DIRS or (top and name in _EXCLUDED_TOP_DIRS) or name.endswith(".egg-info")
    )


def _excluded_file(name: str) -> bool:
    return name in _EXCLUDED_FILES or name.endswith(_EXCLUDED_SUFFIXES)


def _load_gitignore(directory: Path, rel: str) -> _Specs:
    path = directory / ".gitignore"
    if path.is_symlink() or not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return [(rel, pathspec.GitIgnoreSpec.from_lines(lines))]
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"{path}: cannot use this .gitignore: {exc}") from exc


def _ignored(specs: _Specs, path: str) -> bool:
    """Git semantics: the deepest .gitignore with a matching pattern decides."""
    ignored = False
    for base, spec in specs:
        if path.startswith(base):
            include = spec.check_file(path[len(base) :]).include
            if include is not None:
                ignored = include
    return ignored


def _check_name(root: Path, path: str) -> str:
    if "\\" in path:
        raise InvalidArgument(f"{root / path}: file names with backslashes cannot go in a FAB")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"{root / path!r}: file name is not valid UTF-8") from exc
    return path


def _read_members(
    root: Path, files: list[str], max_file_size: int, max_total_size: int
) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    total = 0
    for rel in files:
        data = _read_capped(root / rel, max_file_size)
        total += len(data)
        if total > max_total_size:
            raise InvalidArgument(
                f"{root}: app files exceed the {max_total_size}-byte total limit "
                "(add large files to .gitignore)"
            )
        members[rel] = data
    return members


def _read_capped(path: Path, limit: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise InvalidArgument(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise InvalidArgument(
            f"{path}: file exceeds the {limit}-byte per-file limit (add it to .gitignore)"
        )
    return data


def _zip(members: dict[str, bytes]) -> bytes:
    """Manifest first, then members by sorted path; fixed times, modes and compression."""
    entries = [
        ManifestEntry(path=p, size=len(d), sha256=hashlib.sha256(d).hexdigest())
        for p, d in members.items()
    ]
    ordered = [(MANIFEST_PATH, encode_manifest(entries)), *sorted(members.items())]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in ordered:
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.create_system = 3  # Unix, whatever the build host
            info.external_attr = (stat.S_IFREG | FILE_MODE) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data, compresslevel=COMPRESS_LEVEL)
    return buf.getvalue()


def _check_installable(data: bytes) -> None:
    """Refuse now what the SuperLink, with the default limits, would refuse at submit."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        try:
            check_members(zf.infolist(), FabLimits(), len(data))
        except InvalidArgument as exc:
            raise InvalidArgument(f"the FAB would be refused on install: {exc}") from exc


def _write_atomic(out_dir: Path, name: str, data: bytes) -> Path:
    target = out_dir / name
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise InvalidArgument(f"{target}: cannot write the FAB: {exc.strerror or exc}") from exc
    return target
