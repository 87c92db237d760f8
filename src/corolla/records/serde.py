"""The one place where records, messages and contexts turn into protobuf and back.

Arrays up to ``inline_limit`` bytes travel inside the message. Larger arrays travel as
content-addressed objects (`corolla.common.objects`): the message then carries only their
``object_id`` and the receiver resolves it from the objects it was sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from corolla.common.configvalues import user_config_from_proto as user_config_from_proto
from corolla.common.configvalues import user_config_to_proto as user_config_to_proto
from corolla.common.errors import InvalidArgument, NotFound
from corolla.proto.v1 import message_pb2 as mpb
from corolla.proto.v1 import records_pb2 as rpb
from corolla.records._inflatable import INLINE_LIMIT as INLINE_LIMIT  # re-exported
from corolla.records._inflatable import ArrayPayload, Buffer
from corolla.records.array import Array
from corolla.records.arrayrecord import ArrayRecord
from corolla.records.context import Context
from corolla.records.message import Error, Message, Metadata, restore_message
from corolla.records.recorddict import RecordDict
from corolla.records.typed import ConfigRecord, MetricRecord

ObjectLookup = Mapping[str, Buffer]

# -- values -------------------------------------------------------------------------------------

_LIST_FIELDS: dict[type, str] = {
    int: "sint_list",
    float: "double_list",
    str: "string_list",
    bool: "bool_list",
    bytes: "bytes_list",
}
_SCALAR_FIELDS: dict[type, str] = {
    int: "sint",
    float: "double",
    str: "string",
    bool: "bool",
    bytes: "bytes",
}


def _value_to_proto(value: Any, out: rpb.Value) -> None:
    if isinstance(value, list):
        kind = type(value[0]) if value else float
        getattr(out, _LIST_FIELDS[kind]).values.extend(value)
    else:
        setattr(out, _SCALAR_FIELDS[type(value)], value)


def _value_from_proto(value: rpb.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument("record value without a type")
    inner = getattr(value, kind)
    if kind.endswith("_list"):
        return list(inner.values)
    return inner


def _items_to_proto(record: Mapping[str, Any], out: Any) -> None:
    for key, value in record.items():
        item = out.items.add()
        item.key = key
        _value_to_proto(value, item.value)


def metric_record_to_proto(record: MetricRecord) -> rpb.MetricRecord:
    out = rpb.MetricRecord()
    _items_to_proto(record, out)
    return out


def metric_record_from_proto(proto: rpb.MetricRecord) -> MetricRecord:
    return MetricRecord({item.key: _value_from_proto(item.value) for item in proto.items})


def config_record_to_proto(record: Mapping[str, Any]) -> rpb.ConfigRecord:
    out = rpb.ConfigRecord()
    _items_to_proto(record, out)
    return out


def config_record_from_proto(proto: rpb.ConfigRecord) -> ConfigRecord:
    return ConfigRecord({item.key: _value_from_proto(item.value) for item in proto.items})


# -- arrays -------------------------------------------------------------------------------------


def array_to_proto(array: Array, inline_limit: int = INLINE_LIMIT) -> rpb.Array:
    out = rpb.Array(dtype=array.dtype, shape=array.shape, nbytes=array.nbytes)
    if array.nbytes <= inline_limit:
        out.data = bytes(array.data)
    else:
        out.object_id = array.data_id
    return out


def array_from_proto(proto: rpb.Array, objects: ObjectLookup | None = None) -> Array:
    if proto.object_id:
        data = (objects or {}).get(proto.object_id)
        if data is None:
            raise NotFound(f"array payload {proto.object_id} was not received")
        array = Array(dtype=proto.dtype, shape=tuple(proto.shape), data=data)
        array._set_known_data_id(proto.object_id)
        return array
    return Array(dtype=proto.dtype, shape=tuple(proto.shape), data=proto.data)


def array_record_to_proto(record: ArrayRecord, inline_limit: int = INLINE_LIMIT) -> rpb.ArrayRecord:
    out = rpb.ArrayRecord()
    for key, array in record.items():
        out.items.append(rpb.ArrayItem(key=key, value=array_to_proto(array, inline_limit)))
    return out


def array_record_from_proto(
    proto: rpb.ArrayRecord, objects: ObjectLookup | None = None
) -> ArrayRecord:
    return ArrayRecord({item.key: array_from_proto(item.value, objects) for item in proto.items})


# -- record dicts, messages, contexts -----------------------------------------------------------


def record_dict_to_proto(records: RecordDict, inline_limit: int = INLINE_LIMIT) -> rpb.RecordDict:
    out = rpb.RecordDict()
    for key, record in records.items():
        item = out.items.add()
        item.key = key
        if isinstance(record, ArrayRecord):
            item.array_record.CopyFrom(array_record_to_proto(record, inline_limit))
        elif isinstance(record, MetricRecord):
            item.metric_record.CopyFrom(metric_record_to_proto(record))
        else:
            item.config_record.CopyFrom(config_record_to_proto(record))
    return out


def record_dict_from_proto(
    proto: rpb.RecordDict, objects: ObjectLookup | None = None
) -> RecordDict:
    out = RecordDict()
    for item in proto.items:
        kind = item.WhichOneof("record")
        if kind == "array_record":
            out[item.key] = array_record_from_proto(item.array_record, objects)
        elif kind == "metric_record":
            out[item.key] = metric_record_from_proto(item.metric_record)
        elif kind == "config_record":
            out[item.key] = config_record_from_proto(item.config_record)
        else:
            raise InvalidArgument(f"record {item.key!r} has no type")
    return out


def metadata_to_proto(md: Metadata) -> mpb.Metadata:
    return mpb.Metadata(
        run_id=md.run_id,
        message_id=md.message_id,
        src_node_id=md.src_node_id,
        dst_node_id=md.dst_node_id,
        reply_to_message_id=md.reply_to_message_id,
        group_id=md.group_id,
        created_at=md.created_at,
        ttl=md.ttl,
        message_type=md.message_type,
    )


def metadata_from_proto(proto: mpb.Metadata) -> Metadata:
    return Metadata(
        run_id=proto.run_id,
        message_id=proto.message_id,
        src_node_id=proto.src_node_id,
        dst_node_id=proto.dst_node_id,
        reply_to_message_id=proto.reply_to_message_id,
        group_id=proto.group_id,
        created_at=proto.created_at,
        ttl=proto.ttl,
        message_type=proto.message_type,
    )


def message_to_proto(message: Message, inline_limit: int = INLINE_LIMIT) -> mpb.Message:
    out = mpb.Message(metadata=metadata_to_proto(message.metadata))
    if message.has_error():
        error = message.error
        out.error.CopyFrom(mpb.Error(code=error.code, reason=error.reason or ""))
    else:
        out.content.CopyFrom(record_dict_to_proto(message.content, inline_limit))
    return out


def message_from_proto(proto: mpb.Message, objects: ObjectLookup | None = None) -> Message:
    metadata = metadata_from_proto(proto.metadata)
    if proto.HasField("error"):
        error = Error(code=proto.error.code, reason=proto.error.reason or None)
        return restore_message(metadata, error=error)
    content = record_dict_from_proto(proto.content, objects)
    return restore_message(metadata, content=content)


def context_to_proto(context: Context, inline_limit: int = INLINE_LIMIT) -> mpb.Context:
    return mpb.Context(
        run_id=context.run_id,
        node_id=context.node_id,
        node_config=user_config_to_proto(context.node_config),
        state=record_dict_to_proto(context.state, inline_limit),
        run_config=user_config_to_proto(context.run_config),
    )


def context_from_proto(proto: mpb.Context, objects: ObjectLookup | None = None) -> Context:
    return Context(
        run_id=proto.run_id,
        node_id=proto.node_id,
        node_config=user_config_from_proto(proto.node_config),
        state=record_dict_from_proto(proto.state, objects),
        run_config=user_config_from_proto(proto.run_config),
    )


# -- objects referenced by a message ------------------------------------------------------------


def large_arrays(records: RecordDict, inline_limit: int = INLINE_LIMIT) -> dict[str, Array]:
    """Arrays of ``records`` that travel as objects, by object id (each id once)."""
    found: dict[str, Array] = {}
    for record in records.values():
        if isinstance(record, ArrayRecord):
            for array in record.values():
                if array.nbytes > inline_limit:
                    found.setdefault(array.data_id, array)
    return found


def referenced_object_ids(protos: Iterable[mpb.Message | mpb.Context]) -> list[str]:
    """Object ids a set of encoded messages or contexts needs to be decoded (each id once)."""
    seen: dict[str, None] = {}
    for proto in protos:
        records = proto.state if isinstance(proto, mpb.Context) else proto.content
        seen.update(dict.fromkeys(record_dict_refs(records)))
    return list(seen)


# -- deflated objects (see corolla.records._inflatable) -----------------------------------------


def payloads(records: Iterable[ArrayRecord]) -> dict[str, ArrayPayload]:
    """The payload children of objects holding ``records``: their large arrays, by data id."""
    found: dict[str, ArrayPayload] = {}
    for record in records:
        for array in record.values():
            found.update(array.slice_array())
    return found


def array_record_refs(proto: rpb.ArrayRecord) -> list[str]:
    return [item.value.object_id for item in proto.items if item.value.object_id]


def record_dict_refs(proto: rpb.RecordDict) -> list[str]:
    return [
        object_id
        for item in proto.items
        if item.WhichOneof("record") == "array_record"
        for object_id in array_record_refs(item.array_record)
    ]
