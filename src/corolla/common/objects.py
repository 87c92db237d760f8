"""Large payloads as content-addressed objects, moved in chunks over streaming RPCs.

A chunk frame is a valid protobuf encoding of ``corolla.proto.v1.ObjectChunk``. Frames are
built and parsed here by hand so that the payload bytes are copied once on each side: into the
frame when sending, into the object's buffer when receiving.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from corolla.common.errors import InvalidArgument, ResourceExhausted
from corolla.proto.v1 import objects_pb2 as opb

Buffer = bytes | bytearray | memoryview

CHUNK_SIZE = 1024 * 1024
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


def encode_chunk(object_id: str, offset: int, total_size: int, data: Buffer) -> bytes:
    """One frame: the header fields as protobuf, then the payload as field 4, copied once."""
    piece = memoryview(data).cast("B")
    header = opb.ObjectChunk(
        object_id=object_id, offset=offset, total_size=total_size
    ).SerializeToString()
    return b"".join((header, _DATA_TAG, _varint(piece.nbytes), piece))


def encode_chunks(object_id: str, data: Buffer, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Frames carrying ``data`` in order; an empty object still yields one frame."""
    if chunk_size < 1:
        raise InvalidArgument(f"chunk_size must be at least 1, got {chunk_size}")
    view = memoryview(data).cast("B")
    total = view.nbytes
    offset = 0
    while True:
        piece = view[offset : offset + chunk_size]
        yield encode_chunk(object_id, offset, total, piece)
        offset += piece.nbytes
        if offset >= total:
            return


@dataclass(frozen=True)
class Chunk:
    object_id: str
    offset: int
    total_size: int
    data: memoryview


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
    pos, object_id, offset, total, data = 0, "", 0, 0, memoryview(b"")
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            if field == 2:
                offset = value
            elif field == 3:
                total = value
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
    return Chunk(object_id, offset, total, data)


class ObjectAssembler:
    """Collects chunk frames into whole objects, checking order, size and (optionally) hash."""

    def __init__(self, *, max_object_size: int = 1 << 40, verify: bool = True) -> None:
        self._max = max_object_size
        self._verify = verify
        self._partial: dict[str, tuple[bytearray, int]] = {}
        self.bytes_received = 0

    def feed(self, frame: Buffer) -> tuple[str, memoryview] | None:
        """Add one frame; returns ``(object_id, data)`` when that object is complete."""
        chunk = decode_chunk(frame)
        if chunk.total_size > self._max:
            raise ResourceExhausted(
                f"object {chunk.object_id} is {chunk.total_size} bytes, over the limit {self._max}"
            )
        buffer, filled = self._partial.get(chunk.object_id, (None, 0))
        if buffer is None:
            buffer = bytearray(chunk.total_size)
        if chunk.offset != filled or len(buffer) != chunk.total_size:
            raise InvalidArgument(f"object {chunk.object_id}: chunk out of order or size changed")
        end = filled + chunk.data.nbytes
        if end > chunk.total_size:
            raise InvalidArgument(f"object {chunk.object_id}: more data than its declared size")
        buffer[filled:end] = chunk.data
        self.bytes_received += chunk.data.nbytes
        if end < chunk.total_size:
            self._partial[chunk.object_id] = (buffer, end)
            return None
        self._partial.pop(chunk.object_id, None)
        if self._verify and object_id_of(buffer) != chunk.object_id:
            raise InvalidArgument(f"object {chunk.object_id}: content does not match its id")
        return chunk.object_id, memoryview(buffer).toreadonly()

    def finish(self) -> None:
        """Raise if an object was left incomplete."""
        if self._partial:
            missing = ", ".join(sorted(self._partial))
            raise InvalidArgument(f"stream ended with incomplete objects: {missing}")


def assemble(frames: Iterable[Buffer], *, verify: bool = True) -> dict[str, memoryview]:
    """All objects carried by ``frames``, by id."""
    assembler = ObjectAssembler(verify=verify)
    objects: dict[str, memoryview] = {}
    for frame in frames:
        done = assembler.feed(frame)
        if done is not None:
            objects[done[0]] = done[1]
    assembler.finish()
    return objects
