"""Object chunks compressed on the wire: zstd, off by default, negotiated per transfer.

A receiver announces the encodings it decodes (`ACCEPTED`: every receiver here decodes zstd),
in ``PullObjectsRequest.accept_encodings`` for a pull and ``MissingObjectsResponse
.accept_encodings`` for a push. A sender compresses only when its own setting
(``--compression``) names an encoding the receiver announced (`negotiated`). Each chunk is
compressed on its own, so frames stay independent (streaming, ranges and retries work as
without compression), and a chunk that compressing would not shrink by `MIN_SAVING` is sent
raw (random float64 weights save about 4 %, float32 ones about 7 %: docs/architecture.md).
``offset`` and ``total_size`` keep counting the object's own bytes; the ``data`` of a zstd
frame is one zstd frame holding that chunk's bytes.

Decompression is bounded whatever a frame claims: a chunk decodes to at most the bytes its
object still misses, and never past `MAX_CHUNK_BYTES`. A frame past that (a decompression
bomb), a malformed one, or one in an unknown encoding is refused with `InvalidArgument`.
"""

from __future__ import annotations

from collections.abc import Iterable

import zstandard

from corolla.common.errors import InvalidArgument

NONE = "none"
ZSTD = "zstd"
SETTINGS = (NONE, ZSTD)  # the choices of --compression
ACCEPTED = (ZSTD,)  # what a receiver here decodes besides identity, announced to senders
IDENTITY_CODE = 0  # ``ObjectChunk.encoding``: the chunk's bytes as they are (never written)
ZSTD_CODE = 1  # ``ObjectChunk.encoding``: one zstd frame
LEVEL = 3  # zstd's default: 150-650 MB/s per core on weights, decompressed at about 1 GB/s
MIN_SAVING = 0.05  # a compressed chunk must be at least this much smaller, or it goes raw
MAX_CHUNK_BYTES = 4 << 20  # the most one chunk may decode to (senders here send 1 MiB chunks)
_MAX_WINDOW = 8 << 20  # the largest zstd window a frame may ask the decoder for


def negotiated(setting: str, accepted: Iterable[str]) -> str:
    """The encoding a sender uses: its own ``setting`` when the receiver ``accepted`` it,
    else `NONE` (every chunk raw)."""
    if setting == NONE or setting not in set(accepted):
        return NONE
    return setting


class ChunkCompressor:
    """Compresses the chunks of one stream, reusing one zstd context (so: one per stream,
    never shared between threads)."""

    code = ZSTD_CODE

    def __init__(self, level: int = LEVEL) -> None:
        self._context = zstandard.ZstdCompressor(level=level)

    def compress(self, data: memoryview) -> bytes | None:
        """``data`` as one zstd frame, or None when that saves less than `MIN_SAVING`."""
        if not data.nbytes:
            return None
        packed = self._context.compress(data)
        return packed if len(packed) <= data.nbytes * (1 - MIN_SAVING) else None


def compressor(encoding: str) -> ChunkCompressor | None:
    """A compressor for one stream in the negotiated ``encoding`` (None: send raw)."""
    if encoding == NONE:
        return None
    if encoding == ZSTD:
        return ChunkCompressor()
    raise InvalidArgument(f"unknown compression {encoding!r} (known: {', '.join(SETTINGS)})")


class ChunkDecompressor:
    """Decodes the compressed chunks of one stream, each to a bounded size (one per stream)."""

    def __init__(self) -> None:
        self._context = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW)

    def decompress(self, code: int, data: memoryview, limit: int) -> bytes:
        """The bytes of a chunk whose frame has encoding ``code`` (not identity) and payload
        ``data``: at most ``limit`` of them, else `InvalidArgument` (allocating at most
        ``limit`` bytes on the way)."""
        if code != ZSTD_CODE:
            raise InvalidArgument(
                f"chunk encoding {code} is not supported (this receiver decodes "
                f"{IDENTITY_CODE}: identity and {ZSTD_CODE}: zstd)"
            )
        try:
            declared = zstandard.frame_content_size(data)  # -1: not in the frame header
        except zstandard.ZstdError as exc:
            raise InvalidArgument(f"malformed zstd chunk ({exc})") from exc
        if declared > limit:
            raise InvalidArgument(
                f"zstd chunk declares {declared} bytes, more than the {limit} it may hold"
            )
        try:
            # The output is allocated at the declared size (checked above) or, undeclared, at
            # ``limit``; decoding past it fails.
            out = self._context.decompress(
                data, max_output_size=max(limit, 1), allow_extra_data=False
            )
        except zstandard.ZstdError as exc:
            raise InvalidArgument(
                f"zstd chunk is malformed or decompresses to more than the {limit} bytes it "
                f"may hold ({exc})"
            ) from exc
        if len(out) > limit:
            raise InvalidArgument(
                f"zstd chunk decompresses to {len(out)} bytes, more than the {limit} it may hold"
            )
        return out
