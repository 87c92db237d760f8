"""Header checks on a FAB's members, done before a single byte is extracted."""

from __future__ import annotations

import re
import stat
import unicodedata
import zipfile
from dataclasses import dataclass

from corolla.common.errors import InvalidArgument

DEFAULT_MAX_RATIO = 200
RATIO_CHECK_FLOOR = 1024 * 1024
"""Members at most this large are not subject to the compression-ratio check."""

_DRIVE_RE = re.compile(r"[A-Za-z]:")


@dataclass(frozen=True)
class Limits:
    """Caps applied to an archive before and while it is extracted."""

    max_total_size: int
    max_member_size: int
    max_members: int
    max_ratio: int


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


def check_members(infos: list[zipfile.ZipInfo], limits: Limits) -> list[zipfile.ZipInfo]:
    """Check every header before anything is written; returns the file members."""
    if len(infos) > limits.max_members:
        raise InvalidArgument(f"FAB has {len(infos)} members, more than {limits.max_members}")
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
        keys.add(key)
        if info.is_dir():
            continue
        _check_file_header(info, limits)
        declared += info.file_size
        if declared > limits.max_total_size:
            raise InvalidArgument(f"FAB declares more than {limits.max_total_size} bytes in total")
        files.append(info)
    parents = {key.rsplit("/", i)[0] for key in keys for i in range(1, key.count("/") + 1)}
    for info in files:
        if _fold(info.filename) in parents:
            raise InvalidArgument(f"FAB member {info.filename!r} refused: both file and directory")
    return files


def _fold(name: str) -> str:
    """Compare names as a case-insensitive, normalizing file system would."""
    return unicodedata.normalize("NFC", name).casefold()


def _check_file_header(info: zipfile.ZipInfo, limits: Limits) -> None:
    refuse = f"FAB member {info.filename!r} refused:"
    if info.flag_bits & 0x1:
        raise InvalidArgument(f"{refuse} encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise InvalidArgument(f"{refuse} unsupported compression method {info.compress_type}")
    if info.file_size > limits.max_member_size:
        raise InvalidArgument(f"{refuse} larger than {limits.max_member_size} bytes")
    if info.file_size > RATIO_CHECK_FLOOR and (
        info.file_size > info.compress_size * limits.max_ratio
    ):
        raise InvalidArgument(f"{refuse} compression ratio over {limits.max_ratio} (zip bomb?)")
