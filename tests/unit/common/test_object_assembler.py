"""`ObjectAssembler` and the receive halves of `common/transfer.py` under hostile input: nothing
is allocated for a declared size, every frame's declared size is checked, a compressed frame
decodes to no more than its object still misses, and a sink is either committed (complete,
hash checked) or discarded, never left open."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Iterator

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from corolla.common.compression import MAX_CHUNK_BYTES, ChunkCompressor
from corolla.common.errors import InvalidArgument, ResourceExhausted
from corolla.common.objects import (
    ObjectAssembler,
    assemble,
    decode_chunk,
    encode_chunk,
    encode_chunks,
    object_id_of,
)
from corolla.common.transfer import receive_objects_into
from corolla.proto.v1 import objects_pb2 as opb

GiB = 1 << 30


class RecordingSink:
    """Keeps nothing but what happened to it: proves the assembler needs no whole object."""

    def __init__(self, log: list[str], object_id: str, size: int) -> None:
        self.log, self.object_id, self.size = log, object_id, size
        self.written = 0
        log.append(f"open {object_id[:6]} {size}")

    def write(self, data: memoryview) -> None:
        self.written += data.nbytes

    def commit(self) -> int:
        self.log.append(f"commit {self.object_id[:6]} {self.written}")
        return self.written

    def discard(self) -> None:
        self.log.append(f"discard {self.object_id[:6]}")


def recording(log: list[str]) -> ObjectAssembler[int]:
    return ObjectAssembler(sink=lambda oid, size: RecordingSink(log, oid, size))


def frame(object_id: str, offset: int, total: int, data: bytes) -> bytes:
    return encode_chunk(object_id, offset, total, data)


DATA = os.urandom(1000)
DATA_ID = object_id_of(DATA)


def test_a_huge_declared_size_allocates_nothing() -> None:
    """The 296-byte request: one frame declaring 64 GiB, with hardly any data."""
    first = frame(DATA_ID, 0, 64 * GiB, b"x" * 100)
    assert len(first) < 300
    tracemalloc.start()
    try:
        assembler = ObjectAssembler()  # default limit: 1 TiB per object
        assert assembler.feed(first) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assembler.close()


def test_the_buffer_grows_with_the_data_and_holds_one_copy() -> None:
    data = os.urandom(3 << 20)
    frames = list(encode_chunks(object_id_of(data), data, 1 << 20))
    tracemalloc.start()
    try:
        objects = assemble(frames)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert bytes(objects[object_id_of(data)]) == data
    assert peak < 1.5 * len(data)  # grown in place, never a second whole copy


def test_a_sink_that_keeps_nothing_still_gets_verified_objects() -> None:
    """The hash is taken chunk by chunk on the way in, not over a buffer at the end."""
    log: list[str] = []
    assembler = recording(log)
    results = [assembler.feed(f) for f in encode_chunks(DATA_ID, DATA, 300)]
    assert results == [None, None, None, (DATA_ID, len(DATA))]
    assert log == [f"open {DATA_ID[:6]} 1000", f"commit {DATA_ID[:6]} 1000"]

    tampered = list(encode_chunks(DATA_ID, DATA, 300))
    last = bytearray(tampered[-1])
    last[-1] ^= 1
    tampered[-1] = bytes(last)
    log.clear()
    with pytest.raises(InvalidArgument, match="does not match"):
        for piece in tampered:
            assembler.feed(piece)
    assert log == [f"open {DATA_ID[:6]} 1000", f"discard {DATA_ID[:6]}"]


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        pytest.param(
            [frame(DATA_ID, 0, 10, b"abcd"), frame(DATA_ID, 4, 12, b"efgh")],
            "declared size changed from 10 to 12",
            id="size-changes",
        ),
        pytest.param(
            [frame(DATA_ID, 0, 10, b"abcd"), frame(DATA_ID, 4, 10, b"efghijk")],
            "more data than its declared size",
            id="data-past-the-size",
        ),
        pytest.param(
            [frame(DATA_ID, 0, 10, b"abcd"), frame(DATA_ID, 5, 10, b"fghi")],
            "out of order",
            id="gap",
        ),
    ],
)
def test_a_bad_later_frame_discards_the_object(frames: list[bytes], error: str) -> None:
    log: list[str] = []
    assembler = recording(log)
    assert assembler.feed(frames[0]) is None
    with pytest.raises(InvalidArgument, match=error):
        assembler.feed(frames[1])
    assert log == [f"open {DATA_ID[:6]} 10", f"discard {DATA_ID[:6]}"]
    assembler.finish()  # nothing left in progress


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(frame(DATA_ID, 0, 3, b"four"), id="more-than-declared"),
        pytest.param(frame(DATA_ID, 4, 10, b"efgh"), id="not-at-offset-0"),
    ],
)
def test_a_bad_first_frame_opens_no_sink(first: bytes) -> None:
    log: list[str] = []
    with pytest.raises(InvalidArgument):
        recording(log).feed(first)
    assert log == []


def test_every_frame_is_checked_against_the_object_limit() -> None:
    log: list[str] = []
    assembler = ObjectAssembler(
        sink=lambda oid, size: RecordingSink(log, oid, size), max_object_size=100
    )
    with pytest.raises(ResourceExhausted, match="over the limit of 100 bytes"):
        assembler.feed(frame(DATA_ID, 0, 101, b""))
    assert log == []  # refused before a sink was opened
    assert assembler.feed(frame(DATA_ID, 0, 100, b"x" * 10)) is None
    with pytest.raises(ResourceExhausted):  # a later frame claiming more is refused too
        assembler.feed(frame(DATA_ID, 10, 200, b"x" * 10))
    assert log == [f"open {DATA_ID[:6]} 100", f"discard {DATA_ID[:6]}"]


def test_the_stream_budget_counts_every_declared_size() -> None:
    objects = [os.urandom(400) for _ in range(3)]
    frames = [f for data in objects for f in encode_chunks(object_id_of(data), data)]
    log: list[str] = []
    assembler = ObjectAssembler(
        sink=lambda oid, size: RecordingSink(log, oid, size), max_stream_bytes=1000
    )
    assert assembler.feed(frames[0]) is not None
    assert assembler.feed(frames[1]) is not None
    with pytest.raises(ResourceExhausted, match="budget of 1000 bytes"):
        assembler.feed(frames[2])
    assert [entry.split()[0] for entry in log] == ["open", "commit", "open", "commit"]
    assert assembler.bytes_declared == 800


def test_objects_in_progress_at_once_are_bounded() -> None:
    datas = [os.urandom(20) for _ in range(3)]
    log: list[str] = []
    assembler = ObjectAssembler(
        sink=lambda oid, size: RecordingSink(log, oid, size), max_open_objects=2
    )
    for data in datas[:2]:
        assert assembler.feed(frame(object_id_of(data), 0, 20, data[:10])) is None
    with pytest.raises(ResourceExhausted, match="more than 2 objects in progress"):
        assembler.feed(frame(object_id_of(datas[2]), 0, 20, datas[2][:10]))
    assembler.close()
    assert sorted(entry.split()[0] for entry in log) == ["discard", "discard", "open", "open"]


def test_no_object_limit_leaves_the_check_to_the_sink() -> None:
    log: list[str] = []
    assembler = ObjectAssembler(
        sink=lambda oid, size: RecordingSink(log, oid, size), max_object_size=None
    )
    assert assembler.feed(frame(DATA_ID, 0, 2 << 40, b"")) is None
    assert log == [f"open {DATA_ID[:6]} {2 << 40}"]


def broken_stream(frames: list[bytes], after: int) -> Iterator[bytes]:
    yield from frames[:after]
    raise ConnectionResetError("the sender went away")


def test_receive_into_discards_what_a_broken_or_short_stream_left() -> None:
    other = os.urandom(500)
    frames = list(encode_chunks(object_id_of(other), other)) + list(
        encode_chunks(DATA_ID, DATA, 300)
    )
    log: list[str] = []

    def sink(oid: str, size: int) -> RecordingSink:
        return RecordingSink(log, oid, size)

    with pytest.raises(ConnectionResetError):
        receive_objects_into(broken_stream(frames, 2), sink)
    assert [entry.split()[0] for entry in log] == ["open", "commit", "open", "discard"]

    log.clear()
    with pytest.raises(InvalidArgument, match="incomplete"):
        receive_objects_into(iter(frames[:3]), sink)
    assert [entry.split()[0] for entry in log] == ["open", "commit", "open", "discard"]

    log.clear()
    response = receive_objects_into(iter(frames), sink)
    assert (response.objects_stored, response.bytes_received) == (2, 1500)
    assert [entry.split()[0] for entry in log] == ["open", "commit", "open", "commit"]


@given(
    st.lists(st.binary(max_size=700), min_size=1, max_size=4),
    st.integers(min_value=1, max_value=256),
)
def test_round_trip_through_any_chunking(datas: list[bytes], chunk_size: int) -> None:
    frames = [f for data in datas for f in encode_chunks(object_id_of(data), data, chunk_size)]
    objects = assemble(frames)
    assert {oid: bytes(view) for oid, view in objects.items()} == {
        hashlib.sha256(data).hexdigest(): data for data in datas
    }


@given(
    offset=st.integers(min_value=0, max_value=(1 << 40) - 1),
    extra=st.integers(min_value=1, max_value=1 << 20),
)
def test_frames_of_objects_past_4_gib_keep_their_offsets(offset: int, extra: int) -> None:
    """Offsets and sizes are varints: a 4 GiB array (or a 1 TiB one) is no special case."""
    object_id = "a" * 64
    piece = b"xy" * 8
    frame = encode_chunk(object_id, offset, offset + extra + len(piece), piece)
    chunk = decode_chunk(frame)
    assert (chunk.object_id, chunk.offset, chunk.total_size) == (
        object_id,
        offset,
        offset + extra + len(piece),
    )
    assert bytes(chunk.data) == piece


# -- compressed frames (zstd): decoded, bounded, refused whole --------------------------------


def zstd_frame(object_id: str, offset: int, total: int, payload: bytes, encoding: int = 1) -> bytes:
    """A frame carrying ``payload`` as it is, marked with ``encoding``."""
    return opb.ObjectChunk(
        object_id=object_id, offset=offset, total_size=total, data=payload, encoding=encoding
    ).SerializeToString()


def zstd(data: bytes, *, with_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(write_content_size=with_size).compress(data)


def test_compressed_frames_are_hashed_and_written_decoded() -> None:
    data = bytes(600) + b"tail" * 150  # 1200 bytes: three frames of 500, 500 and 200
    object_id = object_id_of(data)
    log: list[str] = []
    assembler = recording(log)
    frames = list(encode_chunks(object_id, data, 500, ChunkCompressor()))
    assert {decode_chunk(f).encoding for f in frames} == {1}
    assert [assembler.feed(f) for f in frames] == [None, None, (object_id, len(data))]
    assert log == [f"open {object_id[:6]} {len(data)}", f"commit {object_id[:6]} {len(data)}"]
    assert assembler.bytes_received == len(data)  # the object's bytes, not the wire's

    tampered = zstd_frame(object_id, 0, len(data), zstd(bytes(len(data))))
    log.clear()
    with pytest.raises(InvalidArgument, match="does not match"):
        assembler.feed(tampered)
    assert log == [f"open {object_id[:6]} {len(data)}", f"discard {object_id[:6]}"]


BAD_COMPRESSED = [
    pytest.param(zstd(bytes(5000)), "declares 5000 bytes, more than the 1000", id="declared-bomb"),
    pytest.param(zstd(bytes(5000), with_size=False), "more than the 1000 bytes", id="bomb"),
    pytest.param(b"\x28\xb5\x2f\xfd garbage", "malformed", id="malformed"),
    pytest.param(zstd(bytes(100))[:-2], "malformed", id="truncated"),
]


@pytest.mark.parametrize(("payload", "error"), BAD_COMPRESSED)
def test_a_bad_compressed_first_frame_opens_no_sink(payload: bytes, error: str) -> None:
    log: list[str] = []
    assembler = recording(log)
    with pytest.raises(InvalidArgument, match=error):
        assembler.feed(zstd_frame(DATA_ID, 0, 1000, payload))
    assert log == []
    assembler.finish()  # nothing in progress


@pytest.mark.parametrize(("payload", "error"), BAD_COMPRESSED)
def test_a_bad_compressed_later_frame_discards_the_object(payload: bytes, error: str) -> None:
    """The bound is what the object still misses: 1000 bytes of its 1400 (400 arrived)."""
    log: list[str] = []
    assembler = recording(log)
    assert assembler.feed(frame(DATA_ID, 0, 1400, DATA[:400])) is None
    with pytest.raises(InvalidArgument, match=error):
        assembler.feed(zstd_frame(DATA_ID, 400, 1400, payload))
    assert log == [f"open {DATA_ID[:6]} 1400", f"discard {DATA_ID[:6]}"]
    assembler.finish()


def test_no_chunk_decodes_past_the_chunk_bound() -> None:
    """A legitimate but huge chunk: the object misses 8 MiB, the bound is still 4 MiB."""
    data = bytes(8 << 20)
    object_id = object_id_of(data)
    ok = list(encode_chunks(object_id, data, MAX_CHUNK_BYTES, ChunkCompressor()))
    assert assemble(ok)[object_id].nbytes == len(data)
    log: list[str] = []
    with pytest.raises(InvalidArgument, match=f"more than the {MAX_CHUNK_BYTES}"):
        recording(log).feed(zstd_frame(object_id, 0, len(data), zstd(bytes(MAX_CHUNK_BYTES + 1))))
    assert log == []


def test_an_unknown_encoding_is_refused_and_nothing_is_stored() -> None:
    log: list[str] = []
    assembler = recording(log)
    with pytest.raises(InvalidArgument, match="encoding 2 is not supported"):
        assembler.feed(zstd_frame(DATA_ID, 0, len(DATA), DATA, encoding=2))
    assert log == []
    assert assembler.feed(frame(DATA_ID, 0, len(DATA), DATA[:10])) is None
    with pytest.raises(InvalidArgument, match="encoding 99 is not supported"):
        assembler.feed(zstd_frame(DATA_ID, 10, len(DATA), DATA[10:], encoding=99))
    assert log == [f"open {DATA_ID[:6]} {len(DATA)}", f"discard {DATA_ID[:6]}"]


def test_receive_into_stores_nothing_of_a_stream_with_a_bomb() -> None:
    frames = [
        *encode_chunks(object_id_of(bytes(3000)), bytes(3000), compressor=ChunkCompressor()),
        zstd_frame(DATA_ID, 0, 1000, zstd(bytes(1 << 20), with_size=False)),
    ]
    log: list[str] = []
    with pytest.raises(InvalidArgument, match="more than the 1000 bytes"):
        receive_objects_into(iter(frames), lambda oid, size: RecordingSink(log, oid, size))
    assert [entry.split()[0] for entry in log] == ["open", "commit"]  # the good one only
