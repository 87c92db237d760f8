"""Large payloads as content-addressed objects, moved in chunks over streaming RPCs.

A chunk frame is a valid protobuf encoding of ``corolla.proto.v1.ObjectChunk``. Frames are
built and parsed here by hand so that the payload bytes are copied once on each side: into the
frame when sending, into the object's sink when receiving (a buffer grown as the data arrives,
or a file). Nothing is allocated for a declared size before the data is there. A chunk may
travel compressed (``encoding``, see `corolla.common.compression`); it is then decompressed,
to a bounded size, before it is hashed and written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, overload, runtime_checkable

from corolla.common.compression import MAX_CHUNK_BYTES, ChunkCompressor, ChunkDecompressor
from corolla.common.errors import InvalidArgument, ResourceExhausted
from corolla.proto.v1 import objects_pb2 as opb

Buffer = bytes | bytearray | memoryview
_R = TypeVar("_R")
_R_co = TypeVar("_R_co", covariant=True)

CHUNK_SIZE = 1024 * 1024
MAX_OBJECT_SIZE = 1 << 40  # the default bound on one object's declared size
MAX_OPEN_OBJECTS = 16  # objects one stream may have in progress at once (senders send 1)
_DATA_TAG = b"\x22"  # field 4, wire type 2 (length-delimited)
_OBJECT_ID_LEN = 64  # sha256 hex


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def object_id_of(data: Buffer) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_chunk(
    object_id: str,
    offset: int,
    total_size: int,
    data: Buffer,
    compressor: ChunkCompressor | None = None,
) -> bytes:
    """One frame: the header fields as protobuf, then the payload as field 4, copied once.

    With a ``compressor`` the payload is the chunk compressed, marked by ``encoding``, unless
    that does not pay; without one (or when it does not pay) the frame is exactly as it was
    before compression existed (``encoding`` 0 is not written)."""
    piece = memoryview(data).cast("B")
    encoding = 0
    if compressor is not None and (packed := compressor.compress(piece)) is not None:
        piece, encoding = memoryview(packed), compressor.code
    header = opb.ObjectChunk(
        object_id=object_id, offset=offset, total_size=total_size, encoding=encoding
    ).SerializeToString()
    return b"".join((header, _DATA_TAG, _varint(piece.nbytes), piece))


def encode_chunks(
    object_id: str,
    data: Buffer,
    chunk_size: int = CHUNK_SIZE,
    compressor: ChunkCompressor | None = None,
) -> Iterator[bytes]:
    """Frames carrying ``data`` in order; an empty object still yields one frame."""
    if chunk_size < 1:
        raise InvalidArgument(f"chunk_size must be at least 1, got {chunk_size}")
    view = memoryview(data).cast("B")
    total = view.nbytes
    offset = 0
    while True:
        piece = view[offset : offset + chunk_size]
        yield encode_chunk(object_id, offset, total, piece, compressor)
        offset += piece.nbytes
        if offset >= total:
            return


@dataclass(frozen=True)
class Chunk:
    object_id: str
    offset: int
    total_size: int
    data: memoryview  # as it travels: compressed unless ``encoding`` is 0
    encoding: int = 0  # ``ObjectChunk.encoding``: 0 identity, 1 zstd


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise InvalidArgument("malformed object chunk (bad varint)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def decode_chunk(frame: Buffer) -> Chunk:
    """Parse one frame without copying its payload."""
    buf = memoryview(frame).cast("B")
    pos, object_id, offset, total, data, encoding = 0, "", 0, 0, memoryview(b""), 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            if field == 2:
                offset = value
            elif field == 3:
                total = value
            elif field == 5:
                encoding = value
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            if pos + size > len(buf):
                raise InvalidArgument("malformed object chunk (truncated field)")
            if field == 1:
                object_id = bytes(buf[pos : pos + size]).decode("ascii", "replace")
            elif field == 4:
                data = buf[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > len(buf):
                raise InvalidArgument("malformed object chunk (truncated fixed-width field)")
        else:
            raise InvalidArgument(f"malformed object chunk (wire type {wire})")
    if len(object_id) != _OBJECT_ID_LEN:
        raise InvalidArgument("object chunk without a valid object id")
    return Chunk(object_id, offset, total, data, encoding)


class ObjectSink(Protocol[_R_co]):
    """Where one object's bytes go while they arrive: a growing buffer, a file, a database row.

    `ObjectAssembler` opens a sink on an object's first frame, once that frame's declared size
    passed its checks, and ends it with `commit` (every byte arrived and, when verifying, the
    hash matched) or `discard` (the object will never be complete, or its commit raised)."""

    def write(self, data: memoryview) -> None:
        """Append the next piece. ``data`` is valid only during the call: copy it, never keep
        it."""

    def commit(self) -> _R_co:
        """Keep the object; what it returns is what `ObjectAssembler.feed` hands back."""

    def discard(self) -> None:
        """Drop what was written. Safe to call more than once, and after a failed commit."""


SinkFactory = Callable[[str, int], ObjectSink[_R]]


@runtime_checkable
class ObjectSource(Protocol):
    """An object to send that is not in memory (e.g. an open file): its size, and its bytes
    in pieces of at most ``chunk_size``, from the start on every call."""

    size: int

    def chunks(
        self, chunk_size: int
    ) -> Iterator[Buffer]: ...  # (object_id, declared size) -> its sink


class BufferSink:
    """An object in memory, grown as its data arrives (never allocated at the declared size,
    which a sender could state without sending anything)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: memoryview) -> None:
        self._buffer += data  # the one copy on receive

    def commit(self) -> memoryview:
        return memoryview(self._buffer).toreadonly()

    def discard(self) -> None:
        self._buffer = bytearray()


def buffer_sink(object_id: str, size: int) -> BufferSink:
    """The default `SinkFactory`: each object in its own growing buffer."""
    return BufferSink()


@dataclass
class _Partial(Generic[_R]):
    sink: ObjectSink[_R]
    total: int
    filled: int = 0
    digest: hashlib._Hash | None = None


class ObjectAssembler(Generic[_R]):
    """Collects chunk frames into whole objects, checking order, sizes and (optionally) hash.

    Each object goes into a sink as its frames arrive (by default a buffer grown with the
    data, see `buffer_sink`) and is hashed on the way, so a declared size costs nothing until
    the data is there. Every frame's declared size is checked against ``max_object_size``
    (None: the sinks' owner checks it) and, on an object's first frame, the sizes declared in
    the stream so far against ``max_stream_bytes``; at most ``max_open_objects`` objects may be
    in progress at once. Data past the declared size, a declared size that changes, or a frame
    out of order is refused. A compressed frame is decompressed first, to no more than its
    object still misses (nor past `MAX_CHUNK_BYTES`); one that would decode past that, is
    malformed, or is in an unknown encoding is refused. Use `close` (or ``with``) to discard
    what a broken stream left.
    """

    @overload
    def __init__(
        self: ObjectAssembler[memoryview],
        *,
        max_object_size: int | None = ...,
        max_stream_bytes: int | None = ...,
        max_open_objects: int = ...,
        verify: bool = ...,
    ) -> None: ...

    @overload
    def __init__(
        self,
        *,
        sink: SinkFactory[_R],
        max_object_size: int | None = ...,
        max_stream_bytes: int | None = ...,
        max_open_objects: int = ...,
        verify: bool = ...,
    ) -> None: ...

    def __init__(
        self,
        *,
        sink: SinkFactory[Any] = buffer_sink,
        max_object_size: int | None = MAX_OBJECT_SIZE,
        max_stream_bytes: int | None = None,
        max_open_objects: int = MAX_OPEN_OBJECTS,
        verify: bool = True,
    ) -> None:
        self._open = sink
        self._max = max_object_size
        self._max_stream = max_stream_bytes
        self._max_open = max_open_objects
        self._verify = verify
        self._partial: dict[str, _Partial[_R]] = {}
        self._decompressor: ChunkDecompressor | None = None  # made on the first compressed frame
        self.bytes_declared = 0  # the sizes of every object begun in this stream
        self.bytes_received = 0

    def __enter__(self) -> ObjectAssembler[_R]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def feed(self, frame: Buffer) -> tuple[str, _R] | None:
        """Add one frame; returns ``(object_id, committed sink's result)`` when that object is
        complete. On an error the object's sink is discarded."""
        chunk = decode_chunk(frame)
        object_id, total = chunk.object_id, chunk.total_size
        if self._max is not None and total > self._max:
            self._drop(object_id)
            raise ResourceExhausted(
                f"object {object_id} is {total} bytes, over the limit of {self._max} bytes"
            )
        partial = self._partial.get(object_id)
        data = chunk.data
        if chunk.encoding:
            try:
                data = self._decompressed(chunk, partial)
            except BaseException:
                self._drop(object_id)
                raise
        if partial is None:
            partial = self._begin(chunk, data)
        try:
            if total != partial.total:
                raise InvalidArgument(
                    f"object {object_id}: declared size changed from {partial.total} to {total}"
                )
            if chunk.offset != partial.filled:
                raise InvalidArgument(
                    f"object {object_id}: chunk out of order (offset {chunk.offset}, "
                    f"expected {partial.filled})"
                )
            end = partial.filled + data.nbytes
            if end > total:
                raise InvalidArgument(f"object {object_id}: more data than its declared size")
            if partial.digest is not None:
                partial.digest.update(data)
            partial.sink.write(data)
        except BaseException:
            self._drop(object_id)
            raise
        partial.filled = end
        self.bytes_received += data.nbytes
        if end < total:
            return None
        del self._partial[object_id]
        try:
            if partial.digest is not None and partial.digest.hexdigest() != object_id:
                raise InvalidArgument(f"object {object_id}: content does not match its id")
            return object_id, partial.sink.commit()
        except BaseException:
            partial.sink.discard()
            raise

    def _decompressed(self, chunk: Chunk, partial: _Partial[_R] | None) -> memoryview:
        """A compressed chunk's bytes: no more than its object still misses (by the size it
        declared first) and than `MAX_CHUNK_BYTES`."""
        missing = chunk.total_size if partial is None else partial.total - partial.filled
        limit = max(0, min(missing, MAX_CHUNK_BYTES))
        if self._decompressor is None:
            self._decompressor = ChunkDecompressor()
        try:
            return memoryview(self._decompressor.decompress(chunk.encoding, chunk.data, limit))
        except InvalidArgument as exc:
            raise InvalidArgument(f"object {chunk.object_id}: {exc}") from exc

    def _begin(self, chunk: Chunk, data: memoryview) -> _Partial[_R]:
        """Check an object's first frame (``data``: its chunk's bytes), then open its sink."""
        object_id, total = chunk.object_id, chunk.total_size
        if chunk.offset != 0:
            raise InvalidArgument(
                f"object {object_id}: chunk out of order (offset {chunk.offset}, expected 0)"
            )
        if data.nbytes > total:
            raise InvalidArgument(f"object {object_id}: more data than its declared size")
        if self._max_stream is not None and self.bytes_declared + total > self._max_stream:
            raise ResourceExhausted(
                f"object {object_id} ({total} bytes) takes the stream past its budget of "
                f"{self._max_stream} bytes ({self.bytes_declared} declared before it)"
            )
        if len(self._partial) >= self._max_open:
            raise ResourceExhausted(
                f"object {object_id}: more than {self._max_open} objects in progress at once"
            )
        partial = _Partial(self._open(object_id, total), total)
        if self._verify:
            partial.digest = hashlib.sha256()
        self._partial[object_id] = partial
        self.bytes_declared += total
        return partial

    def _drop(self, object_id: str) -> None:
        partial = self._partial.pop(object_id, None)
        if partial is not None:
            partial.sink.discard()

    def finish(self) -> None:
        """Raise if an object was left incomplete (its sink stays open until `close`)."""
        if self._partial:
            missing = ", ".join(sorted(self._partial))
            raise InvalidArgument(f"stream ended with incomplete objects: {missing}")

    def close(self) -> None:
        """Discard the sinks of objects left incomplete."""
        for object_id in list(self._partial):
            self._drop(object_id)


def assemble(frames: Iterable[Buffer], *, verify: bool = True) -> dict[str, memoryview]:
    """All objects carried by ``frames``, by id."""
    objects: dict[str, memoryview] = {}
    with ObjectAssembler(verify=verify) as assembler:
        for frame in frames:
            done = assembler.feed(frame)
            if done is not None:
                objects[done[0]] = done[1]
        assembler.finish()
    return objects
