"""Messages and contexts to and from their wire form: a protobuf plus the objects it references."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from corolla.common.objects import Buffer
from corolla.proto.v1 import message_pb2 as mpb
from corolla.records.context import Context
from corolla.records.message import Message
from corolla.records.serde import (
    INLINE_LIMIT,
    context_from_proto,
    context_to_proto,
    large_arrays,
    message_from_proto,
    message_to_proto,
    referenced_object_ids,
)

Fetch = Callable[[list[str]], Mapping[str, Buffer]]


def encode_messages(
    messages: Iterable[Message], inline_limit: int = INLINE_LIMIT
) -> tuple[list[mpb.Message], dict[str, Buffer]]:
    """Protobufs of ``messages`` and the objects they reference (each object once)."""
    protos: list[mpb.Message] = []
    objects: dict[str, Buffer] = {}
    for message in messages:
        protos.append(message_to_proto(message, inline_limit))
        if message.has_content():
            for object_id, array in large_arrays(message.content, inline_limit).items():
                objects.setdefault(object_id, array.data)
    return protos, objects


def encode_context(
    context: Context, inline_limit: int = INLINE_LIMIT
) -> tuple[mpb.Context, dict[str, Buffer]]:
    objects = {oid: a.data for oid, a in large_arrays(context.state, inline_limit).items()}
    return context_to_proto(context, inline_limit), objects


def decode_messages(protos: Iterable[mpb.Message], fetch: Fetch) -> list[Message]:
    """Messages from protobufs, fetching the objects they reference in one call."""
    batch = list(protos)
    needed = referenced_object_ids(batch)
    objects = fetch(needed) if needed else {}
    return [message_from_proto(proto, objects) for proto in batch]


def decode_context(proto: mpb.Context, fetch: Fetch) -> Context:
    needed = referenced_object_ids([proto])
    return context_from_proto(proto, fetch(needed) if needed else {})
