"""Moving content-addressed objects over gRPC: client and server halves, one copy each side.

The object RPCs (``PushObjects``, ``PullObjects``) carry hand-built `ObjectChunk` frames as raw
bytes, so they are registered with pass-through (de)serializers; see `add_service`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

from corolla.common.errors import InvalidArgument
from corolla.common.objects import CHUNK_SIZE, Buffer, ObjectAssembler, encode_chunk, encode_chunks
from corolla.proto.v1 import objects_pb2 as opb

RAW_METHODS = frozenset({"PushObjects", "PullObjects"})
RUN_ID_KEY = "corolla-run-id"
NODE_ID_KEY = "corolla-node-id"
TOKEN_KEY = "corolla-token"
MAX_OBJECT_BYTES = 64 * 1024**3


def add_service(server: grpc.Server, service: ServiceDescriptor, servicer: Any) -> None:
    """Register ``servicer`` for ``service``; object RPCs pass frames through as raw bytes."""
    handlers = {}
    for method in service.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        raw = method.name in RAW_METHODS
        deserialize = None if raw and method.client_streaming else request_cls.FromString
        serialize = None if raw and method.server_streaming else response_cls.SerializeToString
        behaviour = getattr(servicer, method.name)
        if method.client_streaming and method.server_streaming:
            factory = grpc.stream_stream_rpc_method_handler
        elif method.client_streaming:
            factory = grpc.stream_unary_rpc_method_handler
        elif method.server_streaming:
            factory = grpc.unary_stream_rpc_method_handler
        else:
            factory = grpc.unary_unary_rpc_method_handler
        handlers[method.name] = factory(
            behaviour, request_deserializer=deserialize, response_serializer=serialize
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


def call_metadata(context: grpc.ServicerContext) -> dict[str, str]:
    return {key: str(value) for key, value in context.invocation_metadata()}


# -- server half --------------------------------------------------------------------------------


def receive_objects(
    frames: Iterable[bytes],
    store: Callable[[str, memoryview], None],
    *,
    max_object_size: int = MAX_OBJECT_BYTES,
) -> opb.PushObjectsResponse:
    """Assemble and verify pushed objects, handing each complete one to ``store``."""
    assembler = ObjectAssembler(max_object_size=max_object_size, verify=True)
    stored = 0
    for frame in frames:
        done = assembler.feed(frame)
        if done is not None:
            store(*done)
            stored += 1
    assembler.finish()
    return opb.PushObjectsResponse(objects_stored=stored, bytes_received=assembler.bytes_received)


def send_objects(
    object_ids: Iterable[str],
    size_of: Callable[[str], int],
    read: Callable[[str, int], Iterator[Buffer]],
    chunk_size: int = CHUNK_SIZE,
) -> Iterator[bytes]:
    """Frames of each requested object, read from the store in chunks (never whole)."""
    for object_id in dict.fromkeys(object_ids):
        total = size_of(object_id)
        offset = 0
        for piece in read(object_id, chunk_size):
            yield encode_chunk(object_id, offset, total, piece)
            offset += memoryview(piece).nbytes
        if total == 0:
            yield encode_chunk(object_id, 0, 0, b"")
        elif offset != total:
            raise InvalidArgument(f"object {object_id}: store returned {offset} of {total} bytes")


# -- client half --------------------------------------------------------------------------------


class ObjectClient:
    """Push and pull objects through one service's object RPCs."""

    def __init__(self, channel: grpc.Channel, service: str, metadata: Iterable[tuple[str, str]]):
        self._metadata: tuple[tuple[str, str | bytes], ...] = tuple(metadata)
        self._missing = channel.unary_unary(
            f"/{service}/MissingObjects",
            request_serializer=opb.MissingObjectsRequest.SerializeToString,
            response_deserializer=opb.MissingObjectsResponse.FromString,
        )
        self._push = channel.stream_unary(
            f"/{service}/PushObjects",
            request_serializer=None,
            response_deserializer=opb.PushObjectsResponse.FromString,
        )
        self._pull = channel.unary_stream(
            f"/{service}/PullObjects",
            request_serializer=opb.PullObjectsRequest.SerializeToString,
            response_deserializer=None,
        )

    def push(self, objects: Mapping[str, Buffer], *, ids: dict[str, Any], timeout: float) -> int:
        """Send the objects the server lacks; returns how many were sent."""
        if not objects:
            return 0
        request = opb.MissingObjectsRequest(object_ids=list(objects), **ids)
        missing = list(self._missing(request, metadata=self._metadata, timeout=timeout).object_ids)
        if not missing:
            return 0
        frames = (frame for oid in missing for frame in encode_chunks(oid, objects[oid]))
        self._push(frames, metadata=self._metadata, timeout=timeout)
        return len(missing)

    def pull(
        self, object_ids: Iterable[str], *, ids: dict[str, Any], timeout: float
    ) -> dict[str, memoryview]:
        """Fetch and verify objects by id."""
        wanted = list(dict.fromkeys(object_ids))
        if not wanted:
            return {}
        request = opb.PullObjectsRequest(object_ids=wanted, **ids)
        assembler = ObjectAssembler(verify=True)
        out: dict[str, memoryview] = {}
        for frame in self._pull(request, metadata=self._metadata, timeout=timeout):
            done = assembler.feed(frame)
            if done is not None:
                out[done[0]] = done[1]
        assembler.finish()
        missing = [oid for oid in wanted if oid not in out]
        if missing:
            raise InvalidArgument(f"server did not send objects {missing}")
        return out
