"""Records as a Flower app sees them: constructors, writable arrays, ``keep_input``, ``copy()``,
views that write through, `Message` forms and replies, `Metadata`, `Context`, codes and types.

Expected values are Flower 1.42's documented behaviour (its sources' facts), written out here.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import logging
import time
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest
import torch

from corolla.common.errors import InvalidArgument
from corolla.records import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    ErrorCode,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)
from corolla.records.message import restore_message

# -- Array: constructors -------------------------------------------------------------------------


def test_array_positional_and_keyword_ndarray() -> None:
    values = np.arange(6, dtype=np.int16).reshape(2, 3)
    assert Array(values) == Array(ndarray=values) == Array.from_numpy_ndarray(values)
    assert Array(values).shape == (2, 3)


def test_array_from_torch_tensor_positional_and_keyword() -> None:
    tensor = torch.arange(4, dtype=torch.float32)
    expected = Array(np.arange(4, dtype=np.float32))
    assert Array(tensor) == expected
    assert Array(torch_tensor=tensor) == expected
    with pytest.raises(TypeError):
        Array(torch_tensor=np.zeros(2))  # type: ignore[arg-type]


def test_array_from_four_parts_positional_and_keyword() -> None:
    # 3 little-endian int32s: 1, 2, 3
    data = b"\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00"
    by_position = Array("int32", (3,), "raw", data)
    by_name = Array(dtype="int32", shape=(3,), stype="raw", data=data)
    without_stype = Array(dtype="int32", shape=(3,), data=data)
    assert by_position == by_name == without_stype
    np.testing.assert_array_equal(by_position.numpy(), [1, 2, 3])
    assert by_position.stype == "raw"


def test_array_reads_flower_npy_stype() -> None:
    values = np.array([[1.5, -2.0]], dtype=">f8")  # big-endian on purpose
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    array = Array("float64", (1, 2), "numpy.ndarray", buffer.getvalue())
    assert array.stype == "raw"  # stored as Corolla's raw bytes
    np.testing.assert_array_equal(array.numpy(), [[1.5, -2.0]])
    with pytest.raises(InvalidArgument):
        Array("float64", (1,), "numpy.ndarray", b"not an npy file")
    with pytest.raises(InvalidArgument, match="holds"):
        Array("float32", (1, 2), "numpy.ndarray", buffer.getvalue())  # it holds float64
    with pytest.raises(InvalidArgument, match="holds"):
        Array("float64", (2,), "numpy.ndarray", buffer.getvalue())  # it is (1, 2)


def test_array_refuses_unknown_stype_and_mixed_forms() -> None:
    with pytest.raises(InvalidArgument, match="stype"):
        Array("uint8", (1,), "pickle", b"\0")
    with pytest.raises(TypeError):
        Array(np.zeros(1), ndarray=np.zeros(1))
    with pytest.raises(TypeError):
        Array(ndarray=np.zeros(1), dtype="float64")
    with pytest.raises(TypeError):
        Array("uint8", (1,), "raw")  # three of the four parts
    with pytest.raises(TypeError):
        Array("uint8", (1,), "raw", b"\0", dtype="uint8")


@pytest.mark.parametrize(
    "value",
    [np.float32(2.5), np.int64(-3), np.bool_(True), np.array(7, dtype=np.uint8)],
    ids=["float32", "int64", "bool", "0-d"],
)
def test_array_takes_numpy_scalars_and_0d(value: Any) -> None:
    array = Array(value)
    assert array.shape == ()
    assert array.dtype == np.asarray(value).dtype.name
    back = array.numpy()
    assert back.shape == ()
    assert back[()] == value
    back[()] = 0  # writable 0-d array
    assert array.numpy()[()] == value


def test_array_slice_array_and_children() -> None:
    small = Array(np.zeros(4))
    assert small.slice_array() == [] and small.children == {}
    big = Array(np.arange(10_000, dtype=np.float64))  # 80 000 bytes, above the 64 KiB inline limit
    ((child_id, payload),) = big.slice_array()
    assert child_id == big.data_id
    assert bytes(payload.data) == bytes(big.data)
    assert big.children == {child_id: payload}


# -- arrays handed to the app are writable and independent ---------------------------------------


def test_to_numpy_ndarrays_in_place_update_leaves_record_unchanged() -> None:
    record = ArrayRecord([np.zeros(3), np.full((2, 2), 5, dtype=np.int32)])
    arrays = record.to_numpy_ndarrays()
    for a in arrays:
        a += 1  # the Flower idiom: update in place
    np.testing.assert_array_equal(arrays[0], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(arrays[1], np.full((2, 2), 6))
    np.testing.assert_array_equal(record["0"].numpy(), np.zeros(3))
    np.testing.assert_array_equal(record["1"].numpy(), np.full((2, 2), 5))


def test_received_arrays_are_writable_too() -> None:
    # the wire decoder keeps the received bytes zero-copy; the app still gets its own arrays
    from corolla.records import serde
    from corolla.records.wire import decode_messages, encode_messages

    big = np.arange(20_000, dtype=np.float32)
    message = Message(RecordDict({"arrays": ArrayRecord([big])}), 1, MessageType.TRAIN)
    protos, objects = encode_messages([message])
    wire_objects = {key: memoryview(bytes(value)).toreadonly() for key, value in objects.items()}
    (received,) = decode_messages(protos, lambda ids: {i: wire_objects[i] for i in ids})
    record = received.content.array_records["arrays"]
    assert not record["0"].view().flags.writeable  # internal view: read-only, no copy
    assert np.shares_memory(record["0"].view(), np.frombuffer(wire_objects[big_id(big)], np.uint8))
    (mine,) = record.to_numpy_ndarrays()
    mine *= 2
    np.testing.assert_array_equal(record["0"].view(), big)
    assert big.nbytes > serde.INLINE_LIMIT


def big_id(values: np.ndarray[Any, Any]) -> str:
    return Array(values).data_id


# -- keep_input ----------------------------------------------------------------------------------


def test_array_record_keep_input_false_empties_a_list() -> None:
    arrays = [np.arange(3.0), np.ones(2)]
    released = [weakref.ref(a) for a in arrays]
    record = ArrayRecord(arrays, keep_input=False)
    assert arrays == []
    assert all(ref() is None for ref in released)  # the record did not keep the caller's arrays
    np.testing.assert_array_equal(record["0"].numpy(), [0.0, 1.0, 2.0])
    kept = [np.arange(3.0)]
    ArrayRecord(numpy_ndarrays=kept)
    assert len(kept) == 1


def test_array_record_keep_input_false_empties_dicts_and_state_dicts() -> None:
    arrays = {"w": Array(np.zeros(2))}
    record = ArrayRecord.from_array_dict(arrays, keep_input=False)
    assert arrays == {} and list(record) == ["w"]
    state = OrderedDict([("a", torch.zeros(2)), ("b", torch.ones(1))])
    record = ArrayRecord.from_torch_state_dict(state, keep_input=False)
    assert len(state) == 0 and list(record) == ["a", "b"]
    state = OrderedDict([("a", torch.zeros(2))])
    ArrayRecord(torch_state_dict=state)
    assert list(state) == ["a"]


def test_from_numpy_ndarrays_keep_input() -> None:
    arrays = [np.zeros(1), np.ones(1)]
    record = ArrayRecord.from_numpy_ndarrays(arrays, keep_input=False)
    assert arrays == [] and list(record) == ["0", "1"]


def test_to_numpy_ndarrays_keep_input_false_gives_up_each_array_as_converted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = ArrayRecord([np.full(2, i, dtype=np.int8) for i in range(3)])
    sizes_seen: list[int] = []
    original = Array.numpy

    def watching(self: Array) -> np.ndarray[Any, Any]:
        sizes_seen.append(len(record))
        return original(self)

    monkeypatch.setattr(Array, "numpy", watching)
    out = record.to_numpy_ndarrays(keep_input=False)
    # converting array k (0-based), the record already gave it up: 3 - (k + 1) are left
    assert sizes_seen == [2, 1, 0]
    assert len(record) == 0
    assert [a.tolist() for a in out] == [[0, 0], [1, 1], [2, 2]]
    assert all(a.flags.writeable for a in out)


def test_to_torch_state_dict_keep_input() -> None:
    record = ArrayRecord({"w": np.arange(3.0)})
    state = record.to_torch_state_dict()
    state["w"] += 1
    np.testing.assert_array_equal(record["w"].numpy(), [0.0, 1.0, 2.0])
    state = record.to_torch_state_dict(keep_input=False)
    assert len(record) == 0
    assert torch.equal(state["w"], torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))


@pytest.mark.parametrize("cls", [ConfigRecord, MetricRecord])
def test_typed_records_keep_input(cls: Any) -> None:
    source = {"a": 1, "b": [2, 3]}
    record = cls(source, keep_input=False)
    assert source == {}
    assert dict(record) == {"a": 1, "b": [2, 3]}
    source = {"a": 1}
    cls(source)
    assert source == {"a": 1}


def test_typed_records_keyword_names() -> None:
    assert ConfigRecord(config_dict={"lr": 0.1}) == {"lr": 0.1}
    assert MetricRecord(metric_dict={"acc": 0.5}) == {"acc": 0.5}
    assert list(inspect.signature(ConfigRecord).parameters) == ["config_dict", "keep_input"]
    assert list(inspect.signature(MetricRecord).parameters) == ["metric_dict", "keep_input"]


# -- ArrayRecord constructors --------------------------------------------------------------------


def test_array_record_constructor_forms_agree() -> None:
    values = [np.zeros(2), np.ones(3)]
    expected = ArrayRecord({"0": np.zeros(2), "1": np.ones(3)})
    assert ArrayRecord(values) == expected
    assert ArrayRecord(numpy_ndarrays=values) == expected
    assert ArrayRecord.from_numpy_ndarrays(values) == expected
    arrays = {"0": Array(np.zeros(2)), "1": Array(np.ones(3))}
    assert ArrayRecord(array_dict=arrays) == expected
    assert ArrayRecord.from_array_dict(arrays) == expected
    state = {"0": torch.zeros(2, dtype=torch.float64), "1": torch.ones(3, dtype=torch.float64)}
    assert ArrayRecord(state) == expected
    assert ArrayRecord(torch_state_dict=state) == expected
    assert ArrayRecord() == ArrayRecord([]) == ArrayRecord({})


def test_array_record_takes_0d_and_numpy_scalar_values() -> None:
    record = ArrayRecord([np.float32(1.5), np.array(2.0), np.arange(2)])
    assert [record[k].shape for k in record] == [(), (), (2,)]
    assert record.to_numpy_ndarrays()[0][()] == np.float32(1.5)


def test_array_record_refuses_two_sources_or_positional_keep_input() -> None:
    with pytest.raises(TypeError):
        ArrayRecord([np.zeros(1)], numpy_ndarrays=[np.zeros(1)])
    with pytest.raises(TypeError):
        ArrayRecord(numpy_ndarrays=[np.zeros(1)], array_dict={})
    with pytest.raises(TypeError):
        ArrayRecord([np.zeros(1)], False)  # keep_input is keyword-only, as in Flower


# -- copy() ----------------------------------------------------------------------------------------


def test_array_record_copy_is_independent() -> None:
    record = ArrayRecord({"w": np.zeros(2)})
    copy = record.copy()
    assert copy == record and copy is not record
    copy["b"] = np.ones(1)
    del copy["w"]
    assert list(record) == ["w"]
    assert copy["b"] is not None


@pytest.mark.parametrize("cls", [ConfigRecord, MetricRecord])
def test_typed_record_copy_is_independent(cls: Any) -> None:
    record = cls({"x": 1, "xs": [1, 2]})
    copy = record.copy()
    assert type(copy) is cls and copy == record
    copy["xs"].append(3)
    copy["y"] = 2
    assert dict(record) == {"x": 1, "xs": [1, 2]}


def test_record_dict_copy_is_independent() -> None:
    rd = RecordDict(
        {"a": ArrayRecord([np.zeros(2)]), "m": MetricRecord({"l": [1.0]}), "c": ConfigRecord()}
    )
    copy = rd.copy()
    assert copy == rd
    copy["a"]["new"] = np.ones(1)
    copy["m"]["l"].append(2.0)
    copy["c"]["k"] = "v"
    del copy["a"]["0"]
    copy["extra"] = MetricRecord()
    assert list(rd) == ["a", "m", "c"]
    assert list(rd["a"]) == ["0"]
    assert rd["m"]["l"] == [1.0]
    assert dict(rd["c"]) == {}


# -- RecordDict: deprecated spellings --------------------------------------------------------------


def test_record_dict_deprecated_arguments_and_properties(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        rd = RecordDict(
            {"c": ConfigRecord({"x": 1})},
            parameters_records={"p": ArrayRecord([np.zeros(1)])},
            metrics_records={"m": MetricRecord({"acc": 1.0})},
            configs_records={"k": ConfigRecord()},
        )
    assert "deprecated" in caplog.text
    assert list(rd) == ["c", "p", "m", "k"]
    assert list(rd.parameters_records) == ["p"]
    assert list(rd.metrics_records) == ["m"]
    assert list(rd.configs_records) == ["c", "k"]
    rd.parameters_records["q"] = ArrayRecord()
    assert "q" in rd  # the deprecated names are the same write-through views
    with pytest.raises(AttributeError):
        rd.parameters_records = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        RecordDict({}, {"p": ArrayRecord()})  # type: ignore[misc]  # keyword-only


# -- Message -------------------------------------------------------------------------------------


def received(dst: int = 5, ttl: float = 100.0) -> Message:
    message = Message(RecordDict(), dst, MessageType.EVALUATE, ttl=ttl, group_id="7")
    message.metadata.run_id, message.metadata.src_node_id = 3, 1
    return message


def test_message_constructor_forms() -> None:
    content = RecordDict({"c": ConfigRecord({"lr": 0.1})})
    for message in (
        Message(content, 4, "train"),
        Message(content, dst_node_id=4, message_type="train"),
        Message(content=content, dst_node_id=4, message_type="train"),
    ):
        md = message.metadata
        assert (md.dst_node_id, md.message_type, md.group_id) == (4, "train", "")
        assert message.content is content
    with pytest.raises(TypeError):
        Message(content, 4, "train", "extra")
    with pytest.raises(TypeError):
        Message(content, 4, "train", dst_node_id=4)
    with pytest.raises(TypeError):
        Message(content, content=content, dst_node_id=4, message_type="train")
    with pytest.raises(TypeError):
        Message(Error(0), 4, "train")  # only a reply carries an error


def test_message_reply_forms() -> None:
    original = received()
    by_position = Message(Error(ErrorCode.NODE_UNAVAILABLE, "x"), reply_to=original)
    by_name = Message(error=Error(ErrorCode.NODE_UNAVAILABLE, "x"), reply_to=original)
    for reply in (by_position, by_name):
        assert reply.error == Error(5, "x")
        md = reply.metadata
        assert (md.src_node_id, md.dst_node_id, md.run_id) == (5, 1, 3)
        assert md.reply_to_message_id == original.metadata.message_id
    content_reply = Message(content=RecordDict(), reply_to=original, ttl=10.0)
    assert content_reply.metadata.ttl <= 10.0


def test_create_reply_and_create_error_reply(caplog: pytest.LogCaptureFixture) -> None:
    original = received(ttl=100.0)
    content = RecordDict({"m": MetricRecord({"acc": 0.5})})
    with caplog.at_level(logging.WARNING):
        reply = original.create_reply(content)
        error_reply = original.create_error_reply(Error(ErrorCode.UNKNOWN, "boom"), ttl=20.0)
    assert "deprecated" in caplog.text
    assert reply.content is content
    md, omd = reply.metadata, original.metadata
    assert (md.src_node_id, md.dst_node_id) == (omd.dst_node_id, omd.src_node_id)
    assert (md.group_id, md.message_type) == ("7", MessageType.EVALUATE)
    assert md.reply_to_message_id == omd.message_id
    # ttl = original ttl - time since it was created: at most 100 s, and only just less
    assert 99.0 < md.ttl <= 100.0
    assert error_reply.error == Error(ErrorCode.UNKNOWN, "boom")
    assert error_reply.metadata.ttl <= 20.0
    assert error_reply.metadata.reply_to_message_id == omd.message_id


def test_message_dst_task_id_and_metadata_form() -> None:
    message = Message(RecordDict(), 2, "query", dst_task_id=9)
    assert message.metadata.dst_task_id == 9 and message.metadata.src_task_id is None
    reply = Message(RecordDict(), reply_to=message)
    assert (reply.metadata.src_task_id, reply.metadata.dst_task_id) == (9, None)
    rebuilt = Message(metadata=message.metadata, content=RecordDict())
    assert rebuilt.metadata is message.metadata
    with pytest.raises(TypeError):
        Message(metadata=message.metadata, content=RecordDict(), ttl=5.0)
    assert restore_message(message.metadata, error=Error(1)).error == Error(1)


def test_metadata_fields_in_flower_order() -> None:
    names = [f.name for f in dataclasses.fields(Metadata) if f.init]
    assert names == [
        "run_id",
        "message_id",
        "src_node_id",
        "dst_node_id",
        "reply_to_message_id",
        "group_id",
        "created_at",
        "ttl",
        "message_type",
        "src_task_id",
        "dst_task_id",
    ]
    md = Metadata(1, "id", 2, 3, "", "g", 12.5, 60.0, "train")
    assert (md.created_at, md.ttl, md.delivered_at) == (12.5, 60.0, "")
    assert (md.src_task_id, md.dst_task_id) == (None, None)
    md.delivered_at = "2025-01-01T00:00:00Z"
    assert md.delivered_at == "2025-01-01T00:00:00Z"


def test_metadata_task_ids_and_delivered_at_are_checked_properties() -> None:
    for name in ("src_task_id", "dst_task_id", "delivered_at"):
        attribute = inspect.getattr_static(Metadata, name)
        assert isinstance(attribute, property) and attribute.fset is not None
    md = Metadata(1, "id", 2, 3, "", "g", 0.0, 1.0, "train", src_task_id=5)
    md.dst_task_id = 6
    assert (md.src_task_id, md.dst_task_id) == (5, 6)
    copied = dataclasses.replace(md)
    assert copied == md and copied.src_task_id == 5
    with pytest.raises(TypeError):
        md.src_task_id = "5"  # type: ignore[assignment]
    with pytest.raises(TypeError):
        Metadata(1, "id", 2, 3, "", "g", 0.0, 1.0, "train", dst_task_id=True)
    with pytest.raises(TypeError):
        md.delivered_at = 12.0  # type: ignore[assignment]
    other = dataclasses.replace(md)
    other.dst_task_id = None
    assert other != md  # the task ids take part in equality like the other fields


def test_new_message_created_at_is_now() -> None:
    before = time.time()
    message = Message(RecordDict(), 1, "train")
    assert before <= message.metadata.created_at <= time.time()


# -- Context, codes, types -----------------------------------------------------------------------


def test_context_flower_order_and_series_id() -> None:
    state = RecordDict()
    context = Context(1, 2, {"n": 1}, state, {"r": "x"})
    assert (context.run_id, context.node_id, context.node_config) == (1, 2, {"n": 1})
    assert context.state is state and context.run_config == {"r": "x"}
    assert context.series_id == 0
    assert Context(1, 2, {}, state, {}, 4).series_id == 4
    assert list(inspect.signature(Context).parameters)[:6] == [
        "run_id",
        "node_id",
        "node_config",
        "state",
        "run_config",
        "series_id",
    ]


def test_error_codes_are_flowers() -> None:
    # flwr.common.constant.ErrorCode (Flower 1.42)
    flower = {
        "UNKNOWN": 0,
        "LOAD_CLIENT_APP_EXCEPTION": 1,
        "CLIENT_APP_RAISED_EXCEPTION": 2,
        "MESSAGE_UNAVAILABLE": 3,
        "REPLY_MESSAGE_UNAVAILABLE": 4,
        "NODE_UNAVAILABLE": 5,
        "MOD_FAILED_PRECONDITION": 6,
        "INVALID_FAB": 7,
    }
    assert {name: getattr(ErrorCode, name) for name in flower} == flower
    # Corolla's own codes never reuse one of Flower's numbers (TTL_EXPIRED is Flower's code
    # for a reply that did not come in time)
    assert ErrorCode.TTL_EXPIRED == ErrorCode.REPLY_MESSAGE_UNAVAILABLE
    own = [ErrorCode.INVALID_REPLY, ErrorCode.RUN_STOPPED]
    assert len(set(own)) == 2 and not set(own) & set(flower.values())


def test_message_types_are_flowers() -> None:
    assert (MessageType.TRAIN, MessageType.EVALUATE, MessageType.QUERY, MessageType.SYSTEM) == (
        "train",
        "evaluate",
        "query",
        "system",
    )
    with pytest.raises(TypeError):
        MessageType()
    with pytest.raises(TypeError):
        ErrorCode()
