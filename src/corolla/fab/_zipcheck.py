"""Header checks on a FAB's members, done before a single byte is extracted."""

from __future__ import annotations

import re
import stat
import unicodedata
import zipfile

from corolla.common.errors import InvalidArgument
from corolla.fab._manifest import MANIFEST_PATH
from corolla.fab.limits import RATIO_CHECK_FLOOR, FabLimits, human_size

RESERVED_DIR = ".corolla"
"""Corolla's own files in an app directory: of them, only the manifest comes from the FAB."""

_DRIVE_RE = re.compile(r"[A-Za-z]:")


def _check_name(name: str) -> None:
    refuse = f"FAB member {name!r} refused:"
    if not name or name.startswith("/"):
        raise InvalidArgument(f"{refuse} absolute or empty path")
    if "\\" in name or _DRIVE_RE.match(name):
        raise InvalidArgument(f"{refuse} backslash or drive letter in path")
    if any(ord(c) < 32 for c in name):
        raise InvalidArgument(f"{refuse} control character in path")
    parts = name.removesuffix("/").split("/")
    if ".." in parts:
        raise InvalidArgument(f"{refuse} '..' component escapes the app directory")
    if any(part in ("", ".") for part in parts):
        raise InvalidArgument(f"{refuse} empty or '.' path component")
    if any(_fold(part) == "__pycache__" for part in parts):
        raise InvalidArgument(f"{refuse} '__pycache__' (compiled code is never installed)")


def check_members(
    infos: list[zipfile.ZipInfo], limits: FabLimits, archive_size: int
) -> list[zipfile.ZipInfo]:
    """Check every header before anything is written; returns the file members."""
    if len(infos) > limits.max_entries:
        raise InvalidArgument(
            f"FAB has {len(infos)} entries, more than the limit of {limits.max_entries}"
        )
    files: list[zipfile.ZipInfo] = []
    keys: set[str] = set()  # folded names
    declared = 0
    for info in infos:
        name = info.filename
        _check_name(name)
        key = _fold(name.removesuffix("/"))
        if key in keys:
            raise InvalidArgument(f"FAB member {name!r} refused: duplicate name (ignoring case)")
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            raise InvalidArgument(f"FAB member {name!r} refused: symbolic link")
        dir_mode_on_file = kind == stat.S_IFDIR and not info.is_dir()
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR) or dir_mode_on_file:
            raise InvalidArgument(f"FAB member {name!r} refused: not a regular file or directory")
        if key.startswith(RESERVED_DIR + "/") and key != MANIFEST_PATH:
            raise InvalidArgument(f"FAB member {name!r} refused: {RESERVED_DIR}/ is reserved")
        keys.add(key)
        if info.is_dir():
            continue
        _check_file_header(info, limits)
        declared += info.file_size
        if declared > limits.max_unpacked_bytes:
            raise InvalidArgument(
                f"FAB unpacks to more than the limit of {human_size(limits.max_unpacked_bytes)}"
            )
        files.append(info)
    check_ratio(declared, archive_size, limits)
    parents = {key.rsplit("/", i)[0] for key in keys for i in range(1, key.count("/") + 1)}
    for info in files:
        if _fold(info.filename) in parents:
            raise InvalidArgument(f"FAB member {info.filename!r} refused: both file and directory")
    return files


def _fold(name: str) -> str:
    """Compare names as a case-insensitive, normalizing file system would."""
    return unicodedata.normalize("NFC", name).casefold()


def check_ratio(unpacked: int, archive_size: int, limits: FabLimits) -> None:
    """The whole archive may not unpack to more than ``max_ratio`` times its size."""
    if unpacked > RATIO_CHECK_FLOOR and unpacked > max(archive_size, 1) * limits.max_ratio:
        raise InvalidArgument(
            f"FAB of {human_size(archive_size)} unpacks to {human_size(unpacked)}, "
            f"{unpacked // max(archive_size, 1)} times its size: over the compression-ratio "
            f"limit of {limits.max_ratio} (zip bomb?)"
        )


def _check_file_header(info: zipfile.ZipInfo, limits: FabLimits) -> None:
    refuse = f"FAB member {info.filename!r} refused:"
    if info.flag_bits & 0x1:
        raise InvalidArgument(f"{refuse} encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise InvalidArgument(f"{refuse} unsupported compression method {info.compress_type}")
    if info.file_size > RATIO_CHECK_FLOOR and (
        info.file_size > info.compress_size * limits.max_ratio
    ):
        raise InvalidArgument(f"{refuse} compression ratio over {limits.max_ratio} (zip bomb?)")
