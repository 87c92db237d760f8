"""The marker of a complete install, and the check that an install is exactly its FAB.

An install directory is trusted only if its marker (``.corolla/installed.json``: the FAB hash
and the sha256 of the FAB's manifest) names the FAB being installed, and its tree is exactly
what the FAB's manifest lists, every file with the listed sha256: no file more (a planted
module), none less, nothing changed, no symbolic link. Python's ``__pycache__`` directories are
deleted on each check, never trusted (a planted ``.pyc`` would run instead of its source).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

from corolla.common.errors import InvalidArgument
from corolla.fab._lease import LOCK_PATH
from corolla.fab._manifest import MANIFEST_PATH, decode_manifest

MARKER_PATH = ".corolla/installed.json"
MARKER_VERSION = 1
_CHUNK = 1024 * 1024


def write_marker(tree: Path, fab_hash: str, manifest: bytes) -> None:
    """Written last into a new install, before it is published."""
    doc = {
        "fab_hash": fab_hash,
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "version": MARKER_VERSION,
    }
    fd = os.open(tree / MARKER_PATH, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(doc, out, sort_keys=True)
        out.write("\n")


def check_tree(tree: Path, fab_hash: str, manifest: bytes) -> str | None:
    """Why the install at ``tree`` is not exactly the FAB with ``fab_hash`` and ``manifest``;
    None when it is."""
    try:
        if not stat.S_ISDIR(os.lstat(tree).st_mode):
            return "not a directory"
        if not _marker_ok(tree, fab_hash, manifest):
            return "no valid install marker"
        entries = decode_manifest(manifest)
    except (OSError, InvalidArgument) as exc:
        return str(exc)
    hashed = {path: entry.sha256 for path, entry in entries.items()}
    hashed[MANIFEST_PATH] = hashlib.sha256(manifest).hexdigest()
    unhashed = {MARKER_PATH, LOCK_PATH}
    expected = hashed.keys() | unhashed
    dirs = {path.rsplit("/", i)[0] for path in expected for i in range(1, path.count("/") + 1)}
    seen: set[str] = set()
    for root, dirnames, filenames in os.walk(tree):
        base = Path(root).relative_to(tree).as_posix()
        prefix = "" if base == "." else base + "/"
        for name in sorted(dirnames):
            rel = prefix + name
            if name == "__pycache__":
                shutil.rmtree(Path(root) / name, ignore_errors=True)
                dirnames.remove(name)
            elif os.path.islink(Path(root) / name):
                return f"{rel!r} is a symbolic link"
            elif rel not in dirs:
                return f"unexpected directory {rel!r}"
        for name in filenames:
            rel = prefix + name
            if rel not in expected:
                return f"unexpected file {rel!r}"
            problem = _check_file(Path(root) / name, hashed.get(rel))
            if problem:
                return f"{rel!r} {problem}"
            seen.add(rel)
    missing = sorted(expected - seen)
    return f"{missing[0]!r} is missing" if missing else None


def _marker_ok(tree: Path, fab_hash: str, manifest: bytes) -> bool:
    path = tree / MARKER_PATH
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode) or info.st_size > 4096:
        return False
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and doc == {
        "fab_hash": fab_hash,
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "version": MARKER_VERSION,
    }


def _check_file(path: Path, sha256: str | None) -> str | None:
    """None if ``path`` is a regular file (with the given sha256, unless None)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO never blocks
    except OSError:
        return "is not a regular file"
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return "is not a regular file"
        if sha256 is None:
            return None
        digest = hashlib.sha256()
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return None if digest.hexdigest() == sha256 else "was modified"
