"""Wire encoding: records, messages and contexts through protobuf, and objects through chunks."""

from __future__ import annotations

import hashlib
import itertools
import math
import struct
from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from corolla.common import objects
from corolla.common.errors import InvalidArgument, NotFound, ResourceExhausted
from corolla.proto.v1 import objects_pb2 as opb
from corolla.proto.v1 import records_pb2 as rpb
from corolla.records import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    ErrorCode,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
    serde,
)
from corolla.records.message import restore_message

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1

# -- NaN-aware, type-strict equality -------------------------------------------------------------


def same_value(a: Any, b: Any) -> bool:
    """Equal by type and value; floats compare bit for bit (so NaN == NaN, -0.0 != 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def same_record(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, ArrayRecord):
        return bool(a == b)
    return list(a) == list(b) and all(same_value(a[k], b[k]) for k in a)


def same_record_dict(a: RecordDict, b: RecordDict) -> bool:
    return list(a) == list(b) and all(same_record(a[k], b[k]) for k in a)


def test_same_value_is_strict() -> None:
    assert same_value(math.nan, math.nan)
    assert not same_value(0.0, -0.0)
    assert not same_value(1, True)
    assert not same_value(1, 1.0)
    assert not same_value([1], [1.0])
    assert same_value([math.nan, b"x"], [math.nan, b"x"])


# -- strategies ----------------------------------------------------------------------------------

keys = st.one_of(st.just(""), st.just("🚀 ñ"), st.text(max_size=10))
int64s = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
floats = st.floats()  # NaN, +-inf, -0.0, subnormals included
metric_values = st.one_of(
    int64s, floats, st.lists(int64s, max_size=5), st.lists(floats, max_size=5)
)
config_scalars = [int64s, floats, st.text(max_size=10), st.booleans(), st.binary(max_size=10)]
config_values = st.one_of(*config_scalars, *(st.lists(s, max_size=5) for s in config_scalars))

metric_records = st.dictionaries(keys, metric_values, max_size=6).map(MetricRecord)
config_records = st.dictionaries(keys, config_values, max_size=6).map(ConfigRecord)
small_arrays = hnp.arrays(
    dtype=st.one_of(
        hnp.integer_dtypes(endianness="?"),
        hnp.floating_dtypes(endianness="?", sizes=(16, 32, 64)),
        hnp.complex_number_dtypes(endianness="?"),
        hnp.boolean_dtypes(),
    ),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)
array_records = st.dictionaries(keys, small_arrays, max_size=4).map(ArrayRecord)
record_dicts = st.dictionaries(
    keys, st.one_of(array_records, metric_records, config_records), max_size=5
).map(RecordDict)

uint64s = st.integers(min_value=0, max_value=UINT64_MAX)
finite = st.floats(allow_nan=False)
metadatas = st.builds(
    Metadata,
    run_id=uint64s,
    message_id=st.text(max_size=40),
    src_node_id=uint64s,
    dst_node_id=uint64s,
    reply_to_message_id=st.text(max_size=40),
    group_id=st.text(max_size=10),
    ttl=finite,
    message_type=st.text(max_size=20),
    created_at=finite,
)
errors = st.builds(Error, code=int64s, reason=st.text(max_size=50))
user_configs = st.dictionaries(
    keys, st.one_of(int64s, floats, st.text(max_size=10), st.booleans()), max_size=5
)


def wire(proto: Any) -> Any:
    """``proto`` after a trip through its serialized bytes."""
    return type(proto).FromString(proto.SerializeToString())


# -- records -------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(record=metric_records)
@example(record=MetricRecord({"": math.nan, "🚀": [INT64_MIN, INT64_MAX], "e": []}))
def test_property_metric_record_round_trip(record: MetricRecord) -> None:
    back = serde.metric_record_from_proto(wire(serde.metric_record_to_proto(record)))
    assert isinstance(back, MetricRecord)
    assert same_record(back, record)


@settings(max_examples=100, deadline=None)
@given(record=config_records)
@example(
    record=ConfigRecord(
        {
            "": True,
            "😀": [False, True],
            "n": 1,
            "b": b"\x00\xff",
            "s": "ünïcødé 🚀",
            "nan": [math.nan, -0.0, math.inf],
            "big": INT64_MAX,
            "small": INT64_MIN,
            "bl": [b"", b"x"],
        }
    )
)
def test_property_config_record_round_trip(record: ConfigRecord) -> None:
    back = serde.config_record_from_proto(wire(serde.config_record_to_proto(record)))
    assert isinstance(back, ConfigRecord)
    assert same_record(back, record)


@settings(max_examples=60, deadline=None)
@given(records=record_dicts)
def test_property_record_dict_round_trip(records: RecordDict) -> None:
    back = serde.record_dict_from_proto(wire(serde.record_dict_to_proto(records)))
    assert same_record_dict(back, records)


def test_record_dict_keeps_kinds_apart() -> None:
    records = RecordDict(
        {
            "m": MetricRecord({"x": 1.0}),
            "c": ConfigRecord({"x": 1.0}),
            "a": ArrayRecord([np.ones(1)]),
        }
    )
    back = serde.record_dict_from_proto(wire(serde.record_dict_to_proto(records)))
    assert type(back["m"]) is MetricRecord
    assert type(back["c"]) is ConfigRecord
    assert type(back["a"]) is ArrayRecord
    assert same_record_dict(back, records)


def test_empty_list_round_trips_as_empty_list() -> None:
    back = serde.config_record_from_proto(
        wire(serde.config_record_to_proto(ConfigRecord({"e": []})))
    )
    assert back["e"] == []
    assert isinstance(back["e"], list)


def test_value_without_type_refused() -> None:
    proto = rpb.MetricRecord()
    proto.items.add(key="k")  # value left unset
    with pytest.raises(InvalidArgument):
        serde.metric_record_from_proto(proto)


def test_record_without_type_refused() -> None:
    proto = rpb.RecordDict()
    proto.items.add(key="k")
    with pytest.raises(InvalidArgument, match="'k'"):
        serde.record_dict_from_proto(proto)


def test_metric_proto_with_config_values_refused() -> None:
    # a peer may send anything: decoding re-checks types
    proto = serde.config_record_to_proto(ConfigRecord({"s": "text"}))
    with pytest.raises(TypeError):
        serde.metric_record_from_proto(rpb.MetricRecord.FromString(proto.SerializeToString()))


def test_array_from_proto_checks_sizes() -> None:
    proto = rpb.Array(dtype="float64", shape=[3], data=b"\0" * 16)
    with pytest.raises(InvalidArgument):
        serde.array_from_proto(proto)
    with pytest.raises(InvalidArgument):
        serde.array_from_proto(rpb.Array(dtype="object", shape=[0], data=b""))


def test_array_inline_limit_boundary() -> None:
    array = Array(np.zeros(8, dtype=np.uint8))
    assert serde.array_to_proto(array, inline_limit=8).data == bytes(8)
    assert not serde.array_to_proto(array, inline_limit=8).object_id
    outlined = serde.array_to_proto(array, inline_limit=7)
    assert outlined.object_id == array.data_id
    assert outlined.data == b""
    assert outlined.nbytes == 8
    assert list(outlined.shape) == [8]
    assert outlined.dtype == "uint8"


# -- messages ------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(metadata=metadatas, content=record_dicts)
def test_property_message_with_content_round_trip(metadata: Metadata, content: RecordDict) -> None:
    message = restore_message(metadata, content=content)
    back = serde.message_from_proto(wire(serde.message_to_proto(message)))
    assert back.metadata == metadata
    assert back.has_content()
    assert not back.has_error()
    assert same_record_dict(back.content, content)


@settings(max_examples=60, deadline=None)
@given(metadata=metadatas, error=errors)
def test_property_message_with_error_round_trip(metadata: Metadata, error: Error) -> None:
    message = restore_message(metadata, error=error)
    back = serde.message_from_proto(wire(serde.message_to_proto(message)))
    assert back.metadata == metadata
    assert back.has_error()
    assert not back.has_content()
    assert back.error == error


@settings(max_examples=60, deadline=None)
@given(metadata=metadatas)
def test_property_metadata_round_trip_exact(metadata: Metadata) -> None:
    back = serde.metadata_from_proto(wire(serde.metadata_to_proto(metadata)))
    assert back == metadata
    for name in ("ttl", "created_at"):
        assert struct.pack("<d", getattr(back, name)) == struct.pack("<d", getattr(metadata, name))
    for name in ("run_id", "src_node_id", "dst_node_id"):
        assert type(getattr(back, name)) is int


def test_constructed_message_and_reply_round_trip() -> None:
    message = Message(RecordDict({"c": ConfigRecord({"x": 1})}), 7, "train.fedprox", group_id="g1")
    message.metadata.run_id = 42
    reply = Message(error=Error(ErrorCode.INVALID_REPLY, "nope"), reply_to=message)
    for original in (message, reply):
        back = serde.message_from_proto(wire(serde.message_to_proto(original)))
        assert back.metadata == original.metadata
        assert back.has_error() == original.has_error()
    back_reply = serde.message_from_proto(wire(serde.message_to_proto(reply)))
    assert back_reply.error == Error(ErrorCode.INVALID_REPLY, "nope")
    assert back_reply.metadata.reply_to_message_id == message.metadata.message_id


@settings(max_examples=50, deadline=None)
@given(
    run_id=uint64s,
    node_id=uint64s,
    node_config=user_configs,
    run_config=user_configs,
    state=record_dicts,
)
def test_property_context_round_trip(
    run_id: int,
    node_id: int,
    node_config: dict[str, Any],
    run_config: dict[str, Any],
    state: RecordDict,
) -> None:
    context = Context(run_id, node_id, node_config=node_config, state=state, run_config=run_config)
    back = serde.context_from_proto(wire(serde.context_to_proto(context)))
    assert back.run_id == run_id
    assert back.node_id == node_id
    assert same_record(ConfigRecord(back.node_config), ConfigRecord(node_config))
    assert same_record(ConfigRecord(back.run_config), ConfigRecord(run_config))
    assert type(back.node_config) is dict
    assert same_record_dict(back.state, state)


def test_user_config_refuses_lists_and_bytes_from_the_wire() -> None:
    for value in ([1, 2], b"raw"):
        proto = serde.config_record_to_proto(ConfigRecord({"k": value}))
        with pytest.raises(InvalidArgument, match="'k'"):
            serde.user_config_from_proto(proto)


# -- large arrays as objects ---------------------------------------------------------------------

LIMIT = 64


def content_with_large_arrays() -> tuple[RecordDict, np.ndarray[Any, Any]]:
    big = np.arange(100, dtype=np.float64).reshape(10, 10)
    records = RecordDict(
        {
            "model": ArrayRecord(
                {"w": big, "b": np.ones(3, dtype=np.float32), "w_again": big.copy()}
            ),
            "opt": ArrayRecord([np.full(50, 7, dtype=np.int32), np.zeros(0)]),
            "m": MetricRecord({"acc": 0.5}),
            "c": ConfigRecord({"lr": 0.01}),
        }
    )
    return records, big


def ship(arrays: dict[str, Array], chunk_size: int) -> dict[str, memoryview]:
    frames = [
        frame
        for object_id, array in arrays.items()
        for frame in objects.encode_chunks(object_id, array.data, chunk_size)
    ]
    return objects.assemble(frames)


@pytest.mark.parametrize("chunk_size", [1, 33, 4096])
def test_message_with_large_arrays_via_objects(chunk_size: int) -> None:
    content, big = content_with_large_arrays()
    message = Message(content, 3, "train")
    large = serde.large_arrays(content, LIMIT)
    # "w" and "w_again" hold the same bytes: one object; the small ones stay inline
    big_id = hashlib.sha256(big.tobytes()).hexdigest()
    int_id = hashlib.sha256(np.full(50, 7, dtype=np.int32).tobytes()).hexdigest()
    assert list(large) == [big_id, int_id]
    assert all(array.nbytes > LIMIT for array in large.values())

    proto = wire(serde.message_to_proto(message, inline_limit=LIMIT))
    assert serde.referenced_object_ids([proto]) == [big_id, int_id]
    assert len(proto.SerializeToString()) < big.nbytes  # payloads are not inline

    store = ship(large, chunk_size)
    back = serde.message_from_proto(proto, store)
    assert back.metadata == message.metadata
    assert same_record_dict(back.content, content)
    np.testing.assert_array_equal(back.content["model"]["w"].numpy(), big)
    assert back.content["model"]["w"].data_id == big_id


def test_missing_object_is_not_found() -> None:
    content, big = content_with_large_arrays()
    proto = serde.message_to_proto(Message(content, 3, "train"), inline_limit=LIMIT)
    store = ship(serde.large_arrays(content, LIMIT), 1024)
    big_id = hashlib.sha256(big.tobytes()).hexdigest()
    del store[big_id]
    with pytest.raises(NotFound, match=big_id):
        serde.message_from_proto(proto, store)
    with pytest.raises(NotFound):
        serde.message_from_proto(proto)  # no objects at all


def test_referenced_object_ids_dedupes_across_messages_and_contexts() -> None:
    content, big = content_with_large_arrays()
    m1 = serde.message_to_proto(Message(content, 1, "train"), inline_limit=LIMIT)
    m2 = serde.message_to_proto(Message(content, 2, "train"), inline_limit=LIMIT)
    ctx = serde.context_to_proto(
        Context(1, 2, state=RecordDict({"w": ArrayRecord([big, np.arange(40.0)])})),
        inline_limit=LIMIT,
    )
    error_reply = serde.message_to_proto(
        Message(error=Error(ErrorCode.UNKNOWN, ""), reply_to=Message(content, 1, "train"))
    )
    ids = serde.referenced_object_ids([m1, error_reply, m2, ctx])
    assert len(ids) == len(set(ids)) == 3
    assert ids[0] == hashlib.sha256(big.tobytes()).hexdigest()
    assert ids[-1] == hashlib.sha256(np.arange(40.0).tobytes()).hexdigest()
    assert serde.referenced_object_ids([error_reply]) == []
    inline = serde.message_to_proto(Message(content, 1, "train"))
    assert serde.referenced_object_ids([inline]) == []


def test_context_with_large_state_via_objects() -> None:
    big = np.linspace(0, 1, 500)
    context = Context(5, 6, state=RecordDict({"opt": ArrayRecord({"m": big})}))
    proto = wire(serde.context_to_proto(context, inline_limit=LIMIT))
    store = ship(serde.large_arrays(context.state, LIMIT), 1000)
    assert serde.referenced_object_ids([proto]) == list(store)
    back = serde.context_from_proto(proto, store)
    np.testing.assert_array_equal(back.state["opt"]["m"].numpy(), big)


def test_large_arrays_respects_limit() -> None:
    content, _ = content_with_large_arrays()
    assert serde.large_arrays(content, 10**9) == {}
    everything = serde.large_arrays(content, 0)
    assert len(everything) == 3  # empty arrays never travel as objects
    assert isinstance(next(iter(everything.values())), Array)


# -- object chunks -------------------------------------------------------------------------------

DATA = bytes(range(256)) * 3 + b"tail"  # 772 bytes
DATA_ID = hashlib.sha256(DATA).hexdigest()


def chunks_of(frames: list[bytes]) -> list[opb.ObjectChunk]:
    return [opb.ObjectChunk.FromString(frame) for frame in frames]


@pytest.mark.parametrize("chunk_size", [1, 7, 100, 256, 771, 772, 773, 10_000, objects.CHUNK_SIZE])
def test_encode_chunks_sizes(chunk_size: int) -> None:
    frames = list(objects.encode_chunks(DATA_ID, DATA, chunk_size))
    assert len(frames) == math.ceil(len(DATA) / chunk_size)
    parsed = chunks_of(frames)
    assert b"".join(c.data for c in parsed) == DATA
    assert [c.offset for c in parsed] == list(range(0, len(DATA), chunk_size))
    assert all(c.object_id == DATA_ID and c.total_size == len(DATA) for c in parsed)
    assert all(len(c.data) <= chunk_size for c in parsed)
    for frame, chunk in zip(frames, parsed, strict=True):
        mine = objects.decode_chunk(frame)
        assert (mine.object_id, mine.offset, mine.total_size, bytes(mine.data)) == (
            chunk.object_id,
            chunk.offset,
            chunk.total_size,
            chunk.data,
        )
    assert bytes(objects.assemble(frames)[DATA_ID]) == DATA


def test_encode_chunks_accepts_typed_buffers() -> None:
    values = np.arange(10, dtype=np.float64)
    object_id = hashlib.sha256(values.tobytes()).hexdigest()
    frames = list(objects.encode_chunks(object_id, memoryview(values), 24))
    assert len(frames) == 4
    assert bytes(objects.assemble(frames)[object_id]) == values.tobytes()


def test_encode_chunk_single_frame() -> None:
    frame = objects.encode_chunk(DATA_ID, 100, len(DATA), memoryview(DATA)[100:200])
    chunk = opb.ObjectChunk.FromString(frame)
    assert (chunk.object_id, chunk.offset, chunk.total_size) == (DATA_ID, 100, len(DATA))
    assert chunk.data == DATA[100:200]
    frames = list(objects.encode_chunks(DATA_ID, DATA, 100))
    assert frame == frames[1]


def test_empty_object() -> None:
    empty_id = hashlib.sha256(b"").hexdigest()
    frames = list(objects.encode_chunks(empty_id, b""))
    assert len(frames) == 1
    (chunk,) = chunks_of(frames)
    assert (chunk.object_id, chunk.offset, chunk.total_size, chunk.data) == (empty_id, 0, 0, b"")
    assert objects.assemble(frames) == {empty_id: memoryview(b"")}


def test_assembled_objects_are_read_only() -> None:
    store = objects.assemble(objects.encode_chunks(DATA_ID, DATA, 100))
    assert store[DATA_ID].readonly


def test_tampered_payload_detected() -> None:
    frames = list(objects.encode_chunks(DATA_ID, DATA, 100))
    last = bytearray(frames[-1])
    last[-1] ^= 0x01
    frames[-1] = bytes(last)
    with pytest.raises(InvalidArgument, match="does not match"):
        objects.assemble(frames)
    # without verification the (tampered) bytes come through as sent
    unverified = objects.assemble(frames, verify=False)
    assert bytes(unverified[DATA_ID]) == DATA[:-1] + bytes([DATA[-1] ^ 0x01])


def test_wrong_object_id_detected() -> None:
    other_id = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(InvalidArgument):
        objects.assemble(objects.encode_chunks(other_id, DATA, 300))


@pytest.mark.parametrize(
    "reorder",
    [
        pytest.param(lambda f: f[::-1], id="reversed"),
        pytest.param(lambda f: [f[0], f[2], f[1], *f[3:]], id="swapped"),
        pytest.param(lambda f: [f[0], *f], id="duplicate-first"),
        pytest.param(lambda f: f[1:], id="missing-first"),
        pytest.param(lambda f: [f[0], *f[2:]], id="gap"),
    ],
)
def test_out_of_order_chunks_refused(reorder: Any) -> None:
    frames = list(objects.encode_chunks(DATA_ID, DATA, 100))
    with pytest.raises(InvalidArgument):
        objects.assemble(reorder(frames))


def test_interleaved_objects_assembled() -> None:
    other = b"another object" * 20
    other_id = hashlib.sha256(other).hexdigest()
    a = list(objects.encode_chunks(DATA_ID, DATA, 100))
    b = list(objects.encode_chunks(other_id, other, 50))
    interleaved = [f for pair in itertools.zip_longest(a, b) for f in pair if f is not None]
    assembler = objects.ObjectAssembler()
    done = {}
    for frame in interleaved:
        result = assembler.feed(frame)
        if result is not None:
            done[result[0]] = bytes(result[1])
    assembler.finish()
    assert done == {DATA_ID: DATA, other_id: other}
    assert assembler.bytes_received == len(DATA) + len(other)


def test_truncated_frame_refused_at_every_cut() -> None:
    data_id = hashlib.sha256(DATA[:50]).hexdigest()
    frame = next(objects.encode_chunks(data_id, DATA[:50], 100))
    for cut in range(len(frame)):
        with pytest.raises(InvalidArgument):
            objects.assemble([frame[:cut]])


def test_frame_with_inconsistent_size_refused() -> None:
    frame = opb.ObjectChunk(
        object_id=DATA_ID, offset=0, total_size=3, data=b"four"
    ).SerializeToString()
    with pytest.raises(InvalidArgument, match="more data"):
        objects.ObjectAssembler().feed(frame)


def test_size_change_midway_refused() -> None:
    assembler = objects.ObjectAssembler(verify=False)
    first = opb.ObjectChunk(object_id=DATA_ID, offset=0, total_size=10, data=b"abcd")
    second = opb.ObjectChunk(object_id=DATA_ID, offset=4, total_size=12, data=b"efgh")
    assert assembler.feed(first.SerializeToString()) is None
    with pytest.raises(InvalidArgument):
        assembler.feed(second.SerializeToString())


@pytest.mark.parametrize("object_id", ["", "abc", DATA_ID[:-1], DATA_ID + "0"])
def test_bad_object_id_refused(object_id: str) -> None:
    frame = opb.ObjectChunk(object_id=object_id, total_size=1, data=b"x").SerializeToString()
    with pytest.raises(InvalidArgument):
        objects.decode_chunk(frame)


@pytest.mark.parametrize("frame", [b"\xff", b"\x0b", b"\x08\xff\xff", b"\x22\x05ab"])
def test_malformed_frames_refused(frame: bytes) -> None:
    with pytest.raises(InvalidArgument):
        objects.decode_chunk(frame)


def test_oversize_object_refused() -> None:
    frames = list(objects.encode_chunks(DATA_ID, DATA, 100))
    with pytest.raises(ResourceExhausted):
        objects.ObjectAssembler(max_object_size=len(DATA) - 1).feed(frames[0])
    exact = objects.ObjectAssembler(max_object_size=len(DATA))
    results = [exact.feed(f) for f in frames]
    assert results[:-1] == [None] * (len(frames) - 1)
    assert results[-1] is not None
    assert bytes(results[-1][1]) == DATA


def test_incomplete_stream() -> None:
    frames = list(objects.encode_chunks(DATA_ID, DATA, 300))
    assembler = objects.ObjectAssembler()
    assert assembler.feed(frames[0]) is None
    assert assembler.feed(frames[1]) is None
    with pytest.raises(InvalidArgument, match=DATA_ID):
        assembler.finish()
    with pytest.raises(InvalidArgument, match="incomplete"):
        objects.assemble(frames[:-1])
    assert assembler.feed(frames[2]) is not None
    assembler.finish()  # complete now


def test_decode_chunk_is_zero_copy() -> None:
    frame = bytearray(next(objects.encode_chunks(DATA_ID, DATA, 10_000)))
    chunk = objects.decode_chunk(frame)
    frame[-1] ^= 0xFF
    assert chunk.data[-1] == DATA[-1] ^ 0xFF


def test_encode_chunks_refuses_non_positive_chunk_size() -> None:
    for chunk_size in (0, -1):
        with pytest.raises((ValueError, InvalidArgument)):
            list(itertools.islice(objects.encode_chunks(DATA_ID, DATA, chunk_size), 2000))


def test_truncated_fixed_width_field_refused() -> None:
    frame = next(objects.encode_chunks(DATA_ID, DATA))
    bad = frame + b"\x29\x01\x02"  # field 5, wire type 1 (fixed64), only 2 of 8 bytes
    with pytest.raises(DecodeError):
        opb.ObjectChunk.FromString(bad)
    with pytest.raises(InvalidArgument):
        objects.decode_chunk(bad)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=600), chunk_size=st.integers(min_value=1, max_value=700))
def test_property_chunks_round_trip(data: bytes, chunk_size: int) -> None:
    object_id = hashlib.sha256(data).hexdigest()
    frames = list(objects.encode_chunks(object_id, data, chunk_size))
    assert len(frames) == max(1, math.ceil(len(data) / chunk_size))
    assert b"".join(c.data for c in chunks_of(frames)) == data
    assert {k: bytes(v) for k, v in objects.assemble(frames).items()} == {object_id: data}


@settings(max_examples=100, deadline=None)
@given(
    object_id=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    offset=uint64s,
    total_size=uint64s,
    data=st.binary(max_size=300),
)
def test_property_decode_chunk_reads_protobuf_frames(
    object_id: str, offset: int, total_size: int, data: bytes
) -> None:
    frame = opb.ObjectChunk(
        object_id=object_id, offset=offset, total_size=total_size, data=data
    ).SerializeToString()
    chunk = objects.decode_chunk(frame)
    assert (chunk.object_id, chunk.offset, chunk.total_size, bytes(chunk.data)) == (
        object_id,
        offset,
        total_size,
        data,
    )
