"""Stream a FAB's members, each checked against the manifest: into a directory, or nowhere.

Headers are checked first (`check_members`); then every byte is counted as it is decompressed,
so a member that inflates past its declared size, the total past ``max_unpacked_bytes`` or the
archive past ``max_ratio`` times its size is refused the moment it happens, whatever its
headers said. With no target directory nothing is written at all (the SuperLink's check at
submit).
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from corolla.common.errors import InvalidArgument
from corolla.fab._manifest import MANIFEST_PATH, MAX_MANIFEST_SIZE, ManifestEntry, decode_manifest
from corolla.fab._zipcheck import check_members
from corolla.fab.config import PYPROJECT, AppConfig, parse_app_config
from corolla.fab.limits import RATIO_CHECK_FLOOR, FabLimits, human_size

MAX_METADATA_SIZE = MAX_MANIFEST_SIZE  # the manifest and pyproject.toml, read into memory
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, ValueError)
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Checked:
    """What a checked FAB holds: its app config and its manifest (raw, and by path)."""

    config: AppConfig
    manifest: bytes
    entries: dict[str, ManifestEntry]


def check_fab_size(data: bytes, limits: FabLimits) -> None:
    """`InvalidArgument` for a FAB over ``limits.max_fab_bytes`` (the cheapest check: first)."""
    if len(data) > limits.max_fab_bytes:
        raise InvalidArgument(
            f"FAB is {human_size(len(data))}, more than the limit of "
            f"{human_size(limits.max_fab_bytes)}"
        )


def open_fab(data: bytes, limits: FabLimits) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    """The archive and its file members, once its size and every header passed the limits."""
    check_fab_size(data, limits)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except ZIP_ERRORS as exc:
        raise InvalidArgument(f"not a valid FAB: not a zip archive ({exc})") from exc
    try:
        return zf, check_members(zf.infolist(), limits, len(data))
    except BaseException:
        zf.close()
        raise


def read_manifest(data: bytes) -> bytes:
    """The raw manifest of a FAB (read with a cap; the rest of the archive is not looked at)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            info = zf.getinfo(MANIFEST_PATH)
            with zf.open(info) as src:
                raw = src.read(MAX_MANIFEST_SIZE + 1)
    except KeyError:
        raise InvalidArgument(f"not a valid FAB: manifest {MANIFEST_PATH} is missing") from None
    except ZIP_ERRORS as exc:
        raise InvalidArgument(f"not a valid FAB: {exc}") from exc
    if len(raw) > MAX_MANIFEST_SIZE:
        raise InvalidArgument(f"FAB manifest {MANIFEST_PATH} is larger than {MAX_MANIFEST_SIZE}")
    return raw


class _Extraction:
    """One pass over the members, with the byte count of the whole archive."""

    def __init__(
        self, zf: zipfile.ZipFile, limits: FabLimits, archive_size: int, target: Path | None
    ) -> None:
        self.zf = zf
        self.limits = limits
        self.archive_size = max(archive_size, 1)
        self.target = target
        self.unpacked = 0

    def run(self, files: list[zipfile.ZipInfo]) -> Checked:
        by_name = {info.filename: info for info in files}
        if MANIFEST_PATH not in by_name:
            raise InvalidArgument(f"not a valid FAB: manifest {MANIFEST_PATH} is missing")
        if PYPROJECT not in by_name:
            raise InvalidArgument(f"not a valid FAB: {PYPROJECT} is missing")
        cap = min(self.limits.max_unpacked_bytes, MAX_METADATA_SIZE)
        _, _, raw_manifest = self.stream(by_name[MANIFEST_PATH], cap=cap, keep=True)
        manifest = decode_manifest(raw_manifest)
        for name in sorted(manifest.keys() ^ (by_name.keys() - {MANIFEST_PATH})):
            where = (
                "listed in the manifest but absent" if name in manifest else "not in the manifest"
            )
            raise InvalidArgument(f"FAB member {name!r} refused: {where}")

        def checked(info: zipfile.ZipInfo, *, keep: bool = False) -> bytes:
            size, digest, content = self.stream(
                info, cap=cap if keep else self.limits.max_unpacked_bytes, keep=keep
            )
            entry = manifest[info.filename]
            if (size, digest) != (entry.size, entry.sha256):
                raise InvalidArgument(f"FAB member {info.filename!r} does not match the manifest")
            return content

        pyproject = checked(by_name[PYPROJECT], keep=True)  # first, to fail fast on a bad app
        config = parse_app_config(pyproject, source=f"FAB {PYPROJECT}")
        for info in files:
            if info.filename not in (PYPROJECT, MANIFEST_PATH):
                checked(info)
        return Checked(config=config, manifest=raw_manifest, entries=manifest)

    def stream(self, info: zipfile.ZipInfo, *, cap: int, keep: bool) -> tuple[int, str, bytes]:
        """Copy one member counting real bytes (headers may lie); returns (size, sha256, bytes
        if ``keep``)."""
        refuse = f"FAB member {info.filename!r} refused:"
        digest = hashlib.sha256()
        kept = bytearray()
        size = 0
        out = None
        if self.target is not None:
            path = self.target.joinpath(*info.filename.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            out = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb")
        try:
            with self.zf.open(info) as src:
                while chunk := src.read(_CHUNK):
                    size += len(chunk)
                    self.unpacked += len(chunk)
                    if size > info.file_size:
                        raise InvalidArgument(f"{refuse} more bytes than its header declares")
                    if size > cap:
                        raise InvalidArgument(f"{refuse} larger than {cap} bytes")
                    self._check_totals(refuse, info, size)
                    digest.update(chunk)
                    if keep:
                        kept += chunk
                    if out is not None:
                        out.write(chunk)
        except ZIP_ERRORS as exc:
            raise InvalidArgument(f"FAB member {info.filename!r} is corrupt: {exc}") from exc
        finally:
            if out is not None:
                out.close()
        if size != info.file_size:
            raise InvalidArgument(f"{refuse} fewer bytes than its header declares")
        return size, digest.hexdigest(), bytes(kept)

    def _check_totals(self, refuse: str, info: zipfile.ZipInfo, size: int) -> None:
        limits = self.limits
        if self.unpacked > limits.max_unpacked_bytes:
            raise InvalidArgument(
                f"{refuse} FAB unpacks to more than the limit of "
                f"{human_size(limits.max_unpacked_bytes)}"
            )
        if size > RATIO_CHECK_FLOOR and size > info.compress_size * limits.max_ratio:
            raise InvalidArgument(f"{refuse} compression ratio over {limits.max_ratio}")
        if self.unpacked > RATIO_CHECK_FLOOR and (
            self.unpacked > self.archive_size * limits.max_ratio
        ):
            raise InvalidArgument(
                f"{refuse} FAB unpacks to more than {limits.max_ratio} times its size (zip bomb?)"
            )


def extract(data: bytes, limits: FabLimits, target: Path | None) -> Checked:
    """Check every member of ``data`` and, unless ``target`` is None, write it under
    ``target`` (an existing empty directory). The caller removes ``target`` on failure."""
    zf, files = open_fab(data, limits)
    with zf:
        return _Extraction(zf, limits, len(data), target).run(files)
