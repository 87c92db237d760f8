"""Bounds on what a FAB may cost to receive and unpack, with their defaults.

A FAB is refused unless all of these hold, checked on the headers before a byte is extracted
and again on the bytes actually decompressed (a zip can lie about its sizes):

- the archive is at most ``max_fab_bytes`` long;
- it has at most ``max_entries`` entries (files and directories);
- its files add up to at most ``max_unpacked_bytes`` (declared sizes, and bytes written);
- nothing decompresses more than ``max_ratio`` times: neither one file nor the whole archive
  (unpacked bytes over archive bytes), once past `RATIO_CHECK_FLOOR` bytes.

The SuperLink checks every submitted FAB with its limits (``--max-fab-bytes``,
``--max-fab-unpacked-bytes``, ``--max-fab-entries``, ``--max-fab-compression-ratio``). App
processes install with the limits in their environment (`ENV`: the same ``COROLLA_MAX_FAB_*``
names as the SuperLink's options), else the defaults; the SuperLink hands its own limits to the
``flwr-serverapp`` processes it starts, so both always agree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

from corolla.common.config import count
from corolla.common.errors import InvalidArgument

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

DEFAULT_MAX_FAB_BYTES = 200 * MiB  # the Exec server's message limit follows it (link.py)
DEFAULT_MAX_UNPACKED_BYTES = 1 * GiB
DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_RATIO = 200  # source code compresses 3-10x; only filler data goes past 200x
RATIO_CHECK_FLOOR = 1 * MiB
"""Amounts of unpacked bytes at most this large are not subject to the compression-ratio check."""

ENV = {
    "max_fab_bytes": "COROLLA_MAX_FAB_BYTES",
    "max_unpacked_bytes": "COROLLA_MAX_FAB_UNPACKED_BYTES",
    "max_entries": "COROLLA_MAX_FAB_ENTRIES",
    "max_ratio": "COROLLA_MAX_FAB_COMPRESSION_RATIO",
}
"""The environment variable of each limit (the SuperLink option's variable, too)."""

_SIZE_RE = re.compile(r"\s*(\d+)\s*([KMG]i?B?|B)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": KiB, "M": MiB, "G": GiB}


@dataclass(frozen=True)
class FabLimits:
    """Caps applied to a FAB before and while it is unpacked (see the module docstring)."""

    max_fab_bytes: int = DEFAULT_MAX_FAB_BYTES
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
    max_entries: int = DEFAULT_MAX_ENTRIES
    max_ratio: int = DEFAULT_MAX_RATIO

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgument(f"FAB limit {item.name} must be a whole number >= 1")

    def to_env(self) -> dict[str, str]:
        """These limits as environment variables, for an app process to install with."""
        return {ENV[item.name]: str(getattr(self, item.name)) for item in fields(self)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FabLimits:
        """The limits set in ``environ`` (`ENV`), the defaults for the others."""
        given: dict[str, int] = {}
        for name, variable in ENV.items():
            raw = environ.get(variable, "")
            if raw:
                parse = parse_size if name in _SIZES else count
                try:
                    given[name] = parse(raw)
                except ValueError as exc:
                    raise InvalidArgument(f"{variable}: {exc}") from None
        return cls(**given)


_SIZES = ("max_fab_bytes", "max_unpacked_bytes")


def parse_size(text: str) -> int:
    """Bytes: a whole number >= 1, optionally with a unit (``200MiB``, ``1G``, ``512KiB``)."""
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"expected a size in bytes such as 1048576, 200MiB or 1GiB, got {text!r}")
    number, unit = match.groups()
    value = int(number) * _UNITS[(unit or "")[:1].upper()]
    if value < 1:
        raise ValueError(f"must be at least 1 byte, got {text!r}")
    return value


def human_size(size: int) -> str:
    """``481.0 MiB (504365056 bytes)``, ``300 bytes``: a size for a message."""
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= scale:
            return f"{size / scale:.1f} {unit} ({size} bytes)"
    return f"{size} bytes"
