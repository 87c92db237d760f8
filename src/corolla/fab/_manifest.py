"""The FAB manifest: one JSON member listing every other member's path, size and sha256."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from corolla.common.errors import InvalidArgument

MANIFEST_PATH = ".corolla/manifest.json"
MANIFEST_VERSION = 1
MAX_MANIFEST_SIZE = 16 * 1024 * 1024
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ManifestEntry:
    """One member of the archive, as the builder saw it."""

    path: str
    size: int
    sha256: str


def encode_manifest(entries: list[ManifestEntry]) -> bytes:
    """Deterministic JSON (sorted by path, sorted keys, no whitespace variance)."""
    files = [
        {"path": e.path, "sha256": e.sha256, "size": e.size}
        for e in sorted(entries, key=lambda e: e.path)
    ]
    doc = {"files": files, "version": MANIFEST_VERSION}
    return (json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


def decode_manifest(data: bytes) -> dict[str, ManifestEntry]:
    """Parse and validate a manifest; returns entries by path."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"FAB manifest {MANIFEST_PATH} is not valid JSON") from exc
    if not isinstance(doc, dict) or doc.get("version") != MANIFEST_VERSION:
        raise InvalidArgument(f"FAB manifest {MANIFEST_PATH} has an unsupported version")
    files = doc.get("files")
    if not isinstance(files, list):
        raise InvalidArgument(f"FAB manifest {MANIFEST_PATH} has no 'files' list")
    entries: dict[str, ManifestEntry] = {}
    for item in files:
        entry = _entry(item)
        if entry.path in entries:
            raise InvalidArgument(f"FAB manifest lists {entry.path!r} twice")
        entries[entry.path] = entry
    return entries


def _entry(item: object) -> ManifestEntry:
    if not isinstance(item, dict):
        raise InvalidArgument("FAB manifest entry is not an object")
    path, size, sha = item.get("path"), item.get("size"), item.get("sha256")
    if not isinstance(path, str) or not path:
        raise InvalidArgument("FAB manifest entry has no valid 'path'")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"FAB manifest entry {path!r} has an invalid 'size'")
    if not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha):
        raise InvalidArgument(f"FAB manifest entry {path!r} has an invalid 'sha256'")
    return ManifestEntry(path=path, size=size, sha256=sha)
