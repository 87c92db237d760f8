"""What the object RPCs put on the wire, seen from the client end of a real channel: the frames
a push sends and a pull receives, and the encoding of each (0 raw, 1 zstd)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc

from corolla.common.objects import decode_chunk
from corolla.proto.v1 import objects_pb2 as opb


class WireRecorder(grpc.StreamUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Keeps every frame of the ``PushObjects`` and ``PullObjects`` calls of the channel it
    intercepts (`grpc.intercept_channel(channel, recorder)`)."""

    def __init__(self) -> None:
        self.pushed: list[bytes] = []
        self.pulled: list[bytes] = []

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, request_iterator: Iterator[Any]
    ) -> Any:
        if details.method.endswith("/PushObjects"):
            request_iterator = _kept(request_iterator, self.pushed)
        return continuation(details, request_iterator)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        responses = continuation(details, request)
        if details.method.endswith("/PullObjects"):
            return _kept(responses, self.pulled)
        return responses


def _kept(frames: Iterator[bytes], into: list[bytes]) -> Iterator[bytes]:
    for frame in frames:
        into.append(frame)
        yield frame


def encodings(frames: Iterable[bytes]) -> set[int]:
    """The encodings the frames used."""
    return {decode_chunk(frame).encoding for frame in frames}


def pull_frames(
    channel: grpc.Channel,
    service: str,
    request: opb.PullObjectsRequest,
    metadata: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    """The raw frames a ``PullObjects`` call returns for ``request``."""
    call = channel.unary_stream(
        f"/{service}/PullObjects",
        request_serializer=opb.PullObjectsRequest.SerializeToString,
        response_deserializer=None,
    )
    return list(call(request, metadata=tuple(metadata), timeout=10))
