"""Moving content-addressed objects over gRPC: client and server halves, one copy each side.

The object RPCs (``PushObjects``, ``PullObjects``) carry hand-built `ObjectChunk` frames as raw
bytes, so they are registered with pass-through (de)serializers; see `common/guard.py`.

Trusted hops: where an object's content is checked against its id (sha256 of the bytes). The
SuperLink checks every object pushed to it (ServerApp's and SuperNodes' pushes): it is the
boundary where content from many parties meets, and objects are shared between runs by id.
Every other receiver takes objects from a peer that checked them already or that it trusts
with more than bytes: the ServerApp and the SuperNodes pull from the SuperLink (which checked
them, over an authenticated channel, and whose FABs they run), a ClientApp pulls from its own
SuperNode, and a SuperNode takes its own ClientApp's reply objects for the SuperLink to check.
So a payload is hashed once where it is made (its id) and once where it enters the SuperLink,
not on every hop.

Compression (`corolla.common.compression`): a puller announces the encodings it decodes in
its request, a server in its ``MissingObjects`` reply; the sender (`send_objects`' caller, or
`ObjectClient.push`) compresses only toward a receiver that announced the encoding its own
setting names.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import grpc

from corolla.common.compression import ACCEPTED, NONE, ChunkCompressor, compressor, negotiated
from corolla.common.errors import InvalidArgument
from corolla.common.objects import (
    CHUNK_SIZE,
    Buffer,
    ObjectAssembler,
    ObjectSource,
    SinkFactory,
    buffer_sink,
    encode_chunk,
)
from corolla.proto.v1 import objects_pb2 as opb

RUN_ID_KEY = "corolla-run-id"
NODE_ID_KEY = "corolla-node-id"
TOKEN_KEY = "corolla-token"
MAX_OBJECT_BYTES = 64 * 1024**3
MAX_STREAM_BYTES = 64 * 1024**3  # declared by one push stream, all its objects together
_R = TypeVar("_R")


# After each frame: (bytes moved so far, bytes to move as far as known, whether it is over)
Progress = Callable[[int, int, bool], None]


class TransferLog:
    """A `Progress` that logs a long transfer: a line every ``interval`` seconds while it runs
    (bytes so far, of how many, percent) and one at the end if it took that long. A transfer
    shorter than ``interval`` logs nothing. ``clock`` is injectable."""

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what, self._log, self._interval, self._clock = what, logger, interval, clock
        self._started = self._last = clock()

    def __call__(self, done: int, total: int, finished: bool) -> None:
        now = self._clock()
        if finished:
            if now - self._started >= self._interval:
                self._log.info(
                    "%s: %s in %.1f s", self._what, _megabytes(total), now - self._started
                )
            return
        if now - self._last >= self._interval:
            self._last = now
            percent = 100 * done // total if total else 100
            self._log.info(
                "%s: %s of %s (%d %%)", self._what, _megabytes(done), _megabytes(total), percent
            )


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.0f} MB"


def call_metadata(context: grpc.ServicerContext) -> dict[str, str]:
    return {key: str(value) for key, value in context.invocation_metadata()}


# -- server half --------------------------------------------------------------------------------


def receive_objects_into(
    frames: Iterable[bytes],
    open_sink: SinkFactory[object],
    *,
    max_object_size: int | None = MAX_OBJECT_BYTES,
    max_stream_bytes: int | None = None,
    verify: bool = True,
) -> opb.PushObjectsResponse:
    """Stream each pushed object into the sink ``open_sink(object_id, declared_size)`` gives
    for it, hashing on the way (unless ``verify`` is false); a sink is committed once its
    object is complete and verified, and discarded if the stream breaks off or fails. Nothing
    holds a whole object here."""
    assembler = ObjectAssembler(
        sink=open_sink,
        max_object_size=max_object_size,
        max_stream_bytes=max_stream_bytes,
        verify=verify,
    )
    return _receive(assembler, frames, lambda object_id, result: None)


def _receive(
    assembler: ObjectAssembler[_R],
    frames: Iterable[bytes],
    on_object: Callable[[str, _R], None],
) -> opb.PushObjectsResponse:
    stored = 0
    with assembler:
        for frame in frames:
            done = assembler.feed(frame)
            if done is not None:
                on_object(*done)
                stored += 1
        assembler.finish()
    return opb.PushObjectsResponse(objects_stored=stored, bytes_received=assembler.bytes_received)


def send_objects(
    object_ids: Iterable[str],
    size_of: Callable[[str], int],
    read: Callable[[str, int], Iterator[Buffer]],
    chunk_size: int = CHUNK_SIZE,
    encoding: str = NONE,
) -> Iterator[bytes]:
    """Frames of each requested object, read from the store in chunks (never whole); each
    chunk compressed in ``encoding`` where that pays (negotiated by the caller: see
    `corolla.common.compression.negotiated`)."""
    packer = compressor(encoding)
    for object_id in dict.fromkeys(object_ids):
        total = size_of(object_id)
        offset = 0
        for piece in read(object_id, chunk_size):
            yield encode_chunk(object_id, offset, total, piece, packer)
            offset += memoryview(piece).nbytes
        if total == 0:
            yield encode_chunk(object_id, 0, 0, b"")
        elif offset != total:
            raise InvalidArgument(f"object {object_id}: store returned {offset} of {total} bytes")


# -- client half --------------------------------------------------------------------------------


class ObjectClient:
    """Push and pull objects through one service's object RPCs. ``compression`` (a setting of
    `corolla.common.compression`): compress pushed chunks when the server accepts it; pulls
    always announce what this side decodes."""

    def __init__(
        self,
        channel: grpc.Channel,
        service: str,
        metadata: Iterable[tuple[str, str]],
        *,
        compression: str = NONE,
    ):
        self._metadata: tuple[tuple[str, str | bytes], ...] = tuple(metadata)
        self._compression = compression
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

    def push(
        self,
        objects: Mapping[str, Buffer | ObjectSource],
        *,
        ids: dict[str, Any],
        timeout: float,
        progress: Progress | None = None,
        stage: Callable[[list[str]], None] | None = None,
    ) -> int:
        """Send the objects the server lacks (each a buffer, or a source read in chunks);
        returns how many were sent. ``progress`` hears of every frame sent. ``stage``, if
        given, puts those the server lacks (by id) where it can take them in (a directory it
        shares with this process), before it is asked again which it lacks."""
        if not objects:
            return 0
        missing, accepted = self._lacking(list(objects), ids, timeout)
        if missing and stage is not None:
            stage(missing)
            missing, accepted = self._lacking(missing, ids, timeout)
        if not missing:
            return 0
        packer = compressor(negotiated(self._compression, accepted))
        pieces = (piece for oid in missing for piece in _frames_of(oid, objects[oid], packer))
        frames: Iterator[bytes] = (frame for frame, _ in pieces)
        if progress is not None:
            total = sum(_size_of(objects[oid]) for oid in missing)
            frames = _counted(pieces, total, progress)
        self._push(frames, metadata=self._metadata, timeout=timeout)
        return len(missing)

    def _lacking(
        self, object_ids: list[str], ids: dict[str, Any], timeout: float
    ) -> tuple[list[str], list[str]]:
        """The ids the server lacks, and the encodings it accepts in a push."""
        request = opb.MissingObjectsRequest(object_ids=object_ids, **ids)
        reply = self._missing(request, metadata=self._metadata, timeout=timeout)
        return list(reply.object_ids), list(reply.accept_encodings)

    def pull(
        self,
        object_ids: Iterable[str],
        *,
        ids: dict[str, Any],
        timeout: float,
        verify: bool = True,
    ) -> dict[str, memoryview]:
        """Fetch objects by id into memory, checking each against its id unless ``verify`` is
        false (for a server that checked every object it holds on receipt: see "trusted
        hops" above)."""
        return self.pull_into(object_ids, buffer_sink, ids=ids, timeout=timeout, verify=verify)

    def pull_into(
        self,
        object_ids: Iterable[str],
        open_sink: SinkFactory[_R],
        *,
        ids: dict[str, Any],
        timeout: float,
        verify: bool = True,
        progress: Progress | None = None,
    ) -> dict[str, _R]:
        """Fetch objects by id, each streamed into the sink ``open_sink(object_id, size)``
        gives for it (see `pull` for ``verify``); returns what each committed sink gave.
        ``progress`` hears of every frame received (of the sizes declared so far)."""
        wanted = list(dict.fromkeys(object_ids))
        if not wanted:
            return {}
        request = opb.PullObjectsRequest(object_ids=wanted, accept_encodings=list(ACCEPTED), **ids)
        out: dict[str, _R] = {}
        with ObjectAssembler(sink=open_sink, verify=verify) as assembler:
            for frame in self._pull(request, metadata=self._metadata, timeout=timeout):
                done = assembler.feed(frame)
                if done is not None:
                    out[done[0]] = done[1]
                if progress is not None:
                    progress(assembler.bytes_received, assembler.bytes_declared, False)
            assembler.finish()
            if progress is not None:
                progress(assembler.bytes_received, assembler.bytes_declared, True)
        missing = [oid for oid in wanted if oid not in out]
        if missing:
            raise InvalidArgument(f"server did not send objects {missing}")
        return out


def _size_of(source: Buffer | ObjectSource) -> int:
    return source.size if isinstance(source, ObjectSource) else memoryview(source).nbytes


def _counted(
    pieces: Iterator[tuple[bytes, int]], total: int, progress: Progress
) -> Iterator[bytes]:
    """The frames of ``pieces``, reporting the object bytes each carried once it is sent."""
    sent = 0
    for frame, carried in pieces:
        yield frame
        sent = min(total, sent + carried)
        progress(sent, total, False)
    progress(total, total, True)


def _frames_of(
    object_id: str, source: Buffer | ObjectSource, packer: ChunkCompressor | None
) -> Iterator[tuple[bytes, int]]:
    """Each frame of an object, with how many of the object's bytes it carries."""
    if isinstance(source, ObjectSource):
        size, chunks = source.size, source.chunks(CHUNK_SIZE)
    else:
        view = memoryview(source).cast("B")
        size = view.nbytes
        chunks = (view[start : start + CHUNK_SIZE] for start in range(0, size, CHUNK_SIZE))
    offset = 0
    for piece in chunks:
        carried = memoryview(piece).nbytes
        yield encode_chunk(object_id, offset, size, piece, packer), carried
        offset += carried
    if size == 0:
        yield encode_chunk(object_id, 0, 0, b""), 0
    elif offset != size:
        raise InvalidArgument(f"object {object_id}: source gave {offset} of {size} bytes")
