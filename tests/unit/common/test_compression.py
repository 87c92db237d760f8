"""zstd on object chunks (`common/compression.py` with the frames of `common/objects.py`):
compressible chunks travel smaller and come back whole, incompressible ones travel raw, frames
without compression are the bytes they always were, and decoding is bounded."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from corolla.common.compression import (
    MAX_CHUNK_BYTES,
    NONE,
    ZSTD,
    ChunkCompressor,
    ChunkDecompressor,
    compressor,
    negotiated,
)
from corolla.common.errors import InvalidArgument
from corolla.common.objects import assemble, decode_chunk, encode_chunk, encode_chunks, object_id_of
from corolla.proto.v1 import objects_pb2 as opb

MiB = 1 << 20


@pytest.mark.parametrize(
    ("setting", "accepted", "expected"),
    [
        (NONE, [ZSTD], NONE),  # the sender's setting is off
        (ZSTD, [], NONE),  # the receiver did not announce zstd (an older peer)
        (ZSTD, ["br", "gzip"], NONE),
        (ZSTD, ["gzip", ZSTD], ZSTD),
    ],
)
def test_a_sender_compresses_only_when_both_sides_say_so(
    setting: str, accepted: list[str], expected: str
) -> None:
    assert negotiated(setting, accepted) == expected


def test_compressible_data_travels_smaller_and_comes_back_whole() -> None:
    weights = np.zeros(3 * MiB // 4, dtype=np.float32)  # 3 MiB, mostly zeros (a sparse update)
    weights[::97] = np.arange(weights[::97].size, dtype=np.float32)
    data = weights.tobytes()
    object_id = object_id_of(data)
    frames = list(encode_chunks(object_id, data, MiB, ChunkCompressor()))
    assert len(frames) == 3
    assert {decode_chunk(frame).encoding for frame in frames} == {1}
    assert sum(map(len, frames)) < len(data) // 4
    assert [decode_chunk(frame).offset for frame in frames] == [0, MiB, 2 * MiB]  # raw offsets
    assert {decode_chunk(frame).total_size for frame in frames} == {len(data)}
    assert bytes(assemble(frames)[object_id]) == data


def test_incompressible_data_travels_raw_frame_for_frame() -> None:
    data = os.urandom(2 * MiB + 5)
    object_id = object_id_of(data)
    compressed = list(encode_chunks(object_id, data, MiB, ChunkCompressor()))
    assert compressed == list(encode_chunks(object_id, data, MiB))
    assert {decode_chunk(frame).encoding for frame in compressed} == {0}


@pytest.mark.parametrize(
    ("dtype", "encoding"),
    [
        pytest.param(np.float64, 0, id="float64-saves-4-percent"),
        pytest.param(np.float32, 1, id="float32-saves-7-percent"),
    ],
)
def test_a_chunk_is_compressed_only_when_zstd_saves_five_percent(
    dtype: type[np.floating], encoding: int
) -> None:
    data = np.random.default_rng(0).standard_normal(MiB // 8).astype(dtype).tobytes()
    saved = 1 - len(zstandard.ZstdCompressor(level=3).compress(data)) / len(data)
    assert (saved >= 0.05) == bool(encoding)  # the premise, measured here
    frame = encode_chunk(object_id_of(data), 0, len(data), data, ChunkCompressor())
    assert decode_chunk(frame).encoding == encoding
    assert ChunkCompressor().compress(memoryview(os.urandom(4096))) is None
    assert ChunkCompressor().compress(memoryview(b"")) is None


def test_an_object_of_mixed_chunks_mixes_encodings() -> None:
    data = bytes(MiB) + os.urandom(MiB) + bytes(100)
    object_id = object_id_of(data)
    frames = list(encode_chunks(object_id, data, MiB, ChunkCompressor()))
    assert [decode_chunk(frame).encoding for frame in frames] == [1, 0, 1]
    assert bytes(assemble(frames)[object_id]) == data


def test_frames_without_compression_are_the_bytes_they_always_were() -> None:
    data = b"payload bytes"
    object_id = object_id_of(data)
    # A frame as `encode_chunk` built it before chunks could be compressed (fields 1-4).
    before = bytes.fromhex(
        "0a40" + object_id.encode().hex() + "1003" + "180d" + "220d" + data.hex()
    )
    assert encode_chunk(object_id, 3, 13, data) == before
    assert encode_chunk(object_id, 3, 13, data, compressor(NONE)) == before
    assert encode_chunk(object_id, 3, 13, data, ChunkCompressor()) == before  # does not pay
    assert (
        before
        == opb.ObjectChunk(
            object_id=object_id, offset=3, total_size=13, data=data
        ).SerializeToString()
    )
    assert list(encode_chunks(object_id_of(b""), b"", compressor=ChunkCompressor())) == [
        encode_chunk(object_id_of(b""), 0, 0, b"")
    ]


def test_a_compressed_frame_is_valid_protobuf() -> None:
    data = bytes(5000)
    frame = encode_chunk(object_id_of(data), 0, len(data), data, ChunkCompressor())
    parsed = opb.ObjectChunk.FromString(frame)
    assert (parsed.encoding, parsed.total_size) == (1, len(data))
    assert zstandard.ZstdDecompressor().decompress(parsed.data) == data


@given(st.binary(min_size=1, max_size=64), st.integers(1, 400), st.integers(1, 3000))
def test_round_trip_through_any_chunking_compressed(
    unit: bytes, repeats: int, chunk_size: int
) -> None:
    data = unit * repeats
    object_id = object_id_of(data)
    frames = list(encode_chunks(object_id, data, chunk_size, ChunkCompressor()))
    assert bytes(assemble(frames)[object_id]) == data


def test_compressor_names() -> None:
    assert compressor(NONE) is None
    assert isinstance(compressor(ZSTD), ChunkCompressor)
    with pytest.raises(InvalidArgument, match="unknown compression 'lz4'"):
        compressor("lz4")


def zstd_frame(data: bytes, *, with_size: bool = True) -> memoryview:
    return memoryview(zstandard.ZstdCompressor(write_content_size=with_size).compress(data))


def test_decoding_is_bounded_by_what_the_frame_may_hold() -> None:
    decoder = ChunkDecompressor()
    assert decoder.decompress(1, zstd_frame(bytes(1000)), 1000) == bytes(1000)
    with pytest.raises(InvalidArgument, match="declares 1000 bytes, more than the 999"):
        decoder.decompress(1, zstd_frame(bytes(1000)), 999)
    with pytest.raises(InvalidArgument, match="more than the 999 bytes"):
        decoder.decompress(1, zstd_frame(bytes(1000), with_size=False), 999)
    with pytest.raises(InvalidArgument, match="more than the 0"):
        decoder.decompress(1, zstd_frame(b"x", with_size=False), 0)
    assert decoder.decompress(1, zstd_frame(b"", with_size=False), 0) == b""


def test_a_bomb_without_a_declared_size_allocates_no_more_than_the_bound() -> None:
    """64 MiB of zeros in a few KiB, its size left out of the header: decoding stops at the
    bound (the allocation is the bound, not the 64 MiB)."""
    packer = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    zeros = bytes(MiB)
    bomb = b"".join(packer.compress(zeros) for _ in range(64)) + packer.flush()
    assert len(bomb) < 16 * 1024
    with pytest.raises(InvalidArgument, match=f"more than the {MAX_CHUNK_BYTES} bytes"):
        ChunkDecompressor().decompress(1, memoryview(bomb), MAX_CHUNK_BYTES)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        pytest.param(b"", "malformed zstd chunk", id="empty"),
        pytest.param(b"not zstd at all", "malformed zstd chunk", id="garbage"),
        pytest.param(bytes(zstd_frame(bytes(5000)))[:-4], "malformed", id="truncated"),
        pytest.param(bytes(zstd_frame(b"ab" * 500)) + b"xx", "malformed", id="trailing-bytes"),
        pytest.param(bytes(zstd_frame(b"ab" * 500)) * 2, "malformed", id="two-frames"),
    ],
)
def test_a_malformed_zstd_chunk_is_refused(payload: bytes, error: str) -> None:
    with pytest.raises(InvalidArgument, match=error):
        ChunkDecompressor().decompress(1, memoryview(payload), MAX_CHUNK_BYTES)


def test_an_unknown_encoding_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="chunk encoding 7 is not supported"):
        ChunkDecompressor().decompress(7, zstd_frame(b"x" * 100), MAX_CHUNK_BYTES)
