"""``deflate`` / ``inflate`` / ``object_id`` / ``children`` / ``is_dirty`` on arrays, records,
RecordDicts and messages: ``type(x).inflate(x.deflate(), x.children)`` gives back ``x``."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from corolla.records import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    ErrorCode,
    Message,
    MetricRecord,
    RecordDict,
)
from corolla.records._inflatable import INLINE_LIMIT, ArrayPayload

keys = st.text(max_size=8)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
floats = st.floats(allow_nan=False)  # NaN != NaN would make equal records compare unequal
metric_values = st.one_of(
    int64s, floats, st.lists(int64s, max_size=4), st.lists(floats, max_size=4)
)
config_scalars = [int64s, floats, st.text(max_size=8), st.booleans(), st.binary(max_size=8)]
config_values = st.one_of(*config_scalars, *(st.lists(s, max_size=4) for s in config_scalars))
# small arrays stay inline; one side above INLINE_LIMIT (64 KiB) makes an array a child object
arrays = st.one_of(
    hnp.arrays(
        dtype=st.one_of(
            hnp.integer_dtypes(endianness="?"), hnp.floating_dtypes(), hnp.boolean_dtypes()
        ),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    ),
    st.integers(min_value=0, max_value=3).map(
        lambda seed: np.random.default_rng(seed).random(INLINE_LIMIT // 8 + 1)
    ),
).map(Array)
array_records = st.dictionaries(keys, arrays, max_size=3).map(ArrayRecord)
metric_records = st.dictionaries(keys, metric_values, max_size=4).map(MetricRecord)
config_records = st.dictionaries(keys, config_values, max_size=4).map(ConfigRecord)
record_dicts = st.dictionaries(
    keys, st.one_of(array_records, metric_records, config_records), max_size=4
).map(RecordDict)


def round_trip(obj: Any) -> Any:
    """``obj`` deflated and inflated, through bytes as a peer would receive them."""
    children = obj.children
    shipped = {k: ArrayPayload.inflate(v.deflate()) for k, v in (children or {}).items()}
    return type(obj).inflate(bytes(obj.deflate()), shipped if children is not None else None)


def check_object_id(obj: Any) -> None:
    assert obj.object_id == hashlib.sha256(obj.deflate()).hexdigest()
    for object_id, child in (obj.children or {}).items():
        assert child.object_id == object_id == hashlib.sha256(child.deflate()).hexdigest()


@settings(max_examples=60, deadline=None)
@given(array=arrays)
def test_property_array_round_trip(array: Array) -> None:
    back = round_trip(array)
    assert back == array
    np.testing.assert_array_equal(back.view(), array.view())
    check_object_id(array)
    assert bool(array.children) == (array.nbytes > INLINE_LIMIT)


@settings(max_examples=60, deadline=None)
@given(record=st.one_of(array_records, metric_records, config_records))
def test_property_record_round_trip(record: Any) -> None:
    back = round_trip(record)
    assert type(back) is type(record)
    assert back == record
    check_object_id(record)


@settings(max_examples=60, deadline=None)
@given(records=record_dicts)
def test_property_record_dict_round_trip(records: RecordDict) -> None:
    back = round_trip(records)
    assert back == records
    assert [type(v) for v in back.values()] == [type(v) for v in records.values()]
    check_object_id(records)
    large = {
        a.data_id
        for r in records.array_records.values()
        for a in r.values()
        if a.nbytes > INLINE_LIMIT
    }
    assert set(records.children) == large


@settings(max_examples=40, deadline=None)
@given(
    content=record_dicts,
    dst=st.integers(min_value=0, max_value=2**63),
    group=st.text(max_size=5),
    ttl=st.floats(min_value=1e-3, max_value=1e6),
)
def test_property_message_round_trip(content: RecordDict, dst: int, group: str, ttl: float) -> None:
    message = Message(content, dst, "train.fedprox", ttl=ttl, group_id=group)
    message.metadata.run_id = 12
    back = round_trip(message)
    assert back.metadata == message.metadata
    assert back.content == message.content
    check_object_id(message)


@settings(max_examples=30, deadline=None)
@given(code=int64s, reason=st.one_of(st.none(), st.text(max_size=20)))
def test_property_error_message_round_trip(code: int, reason: str | None) -> None:
    original = Message(RecordDict(), 3, "evaluate")
    reply = Message(Error(code, reason), reply_to=original)
    assert reply.children is None
    back = round_trip(reply)
    assert back.metadata == reply.metadata
    assert back.error == reply.error
    assert not back.has_content()


def test_object_id_changes_with_content() -> None:
    record = ArrayRecord({"w": np.zeros(2)})
    first = record.object_id
    record["w"] = np.ones(2)
    assert record.object_id != first
    assert MetricRecord({"a": 1}).object_id != ConfigRecord({"a": 1}).object_id


def test_inflate_checks_type_and_children() -> None:
    big = Array(np.arange(10_000, dtype=np.float64))
    record = ArrayRecord({"w": big})
    with pytest.raises(ValueError, match="ArrayRecord"):
        RecordDict.inflate(record.deflate())
    with pytest.raises(ValueError, match="children"):
        ArrayRecord.inflate(record.deflate())  # its payload is missing
    extra = {**record.children, "0" * 64: ArrayPayload(b"x")}
    with pytest.raises(ValueError, match="children"):
        ArrayRecord.inflate(record.deflate(), extra)
    with pytest.raises(ValueError, match="children"):
        ConfigRecord.inflate(ConfigRecord({"a": 1}).deflate(), {"x": ArrayPayload(b"")})
    with pytest.raises(ValueError):
        Array.inflate(b"no head at all")


def test_is_dirty() -> None:
    array = Array(np.zeros(3))
    assert array.is_dirty
    _ = array.object_id
    assert not array.is_dirty
    array.is_dirty = True  # Flower lets the owner flag it
    assert array.is_dirty

    record = ArrayRecord({"w": array})
    assert record.is_dirty
    _ = record.object_id
    assert not record.is_dirty
    record["b"] = np.ones(1)
    assert record.is_dirty

    rd = RecordDict({"a": record})
    _ = rd.object_id
    assert not rd.is_dirty
    record["c"] = np.ones(1)  # a change inside one of its records
    assert rd.is_dirty
    _ = rd.object_id
    assert not rd.is_dirty
    rd["m"] = MetricRecord({"x": [1.0]})
    _ = rd.object_id
    # a metric list may be edited in place unseen: such records always count as changed
    assert rd.is_dirty and rd["m"].is_dirty
    assert Message(rd, 1, "train").is_dirty
    assert Error(ErrorCode.UNKNOWN) == Error(ErrorCode.UNKNOWN, "")
