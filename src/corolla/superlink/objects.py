"""The object RPCs of the SuperLink's APIs, after each servicer has checked its caller."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from corolla.common.errors import NotFound
from corolla.common.objects import CHUNK_SIZE
from corolla.common.transfer import receive_objects, send_objects
from corolla.proto.v1 import objects_pb2 as opb
from corolla.superlink.state import LinkState


def store_pushed(state: LinkState, run_id: int, frames: Iterable[bytes]) -> opb.PushObjectsResponse:
    """Assemble, verify and store pushed objects for ``run_id``."""
    return receive_objects(frames, lambda oid, data: state.store_object(run_id, oid, data))


def stream_stored(state: LinkState, object_ids: Iterable[str]) -> Iterator[bytes]:
    """Chunk frames of stored objects; `NotFound` (before any frame) for an unknown id."""
    ids = list(object_ids)
    missing = state.missing_objects(ids)
    if missing:
        raise NotFound(f"unknown objects: {', '.join(missing)}")
    return send_objects(ids, state.object_size, state.read_object, CHUNK_SIZE)


def missing_response(state: LinkState, object_ids: Iterable[str]) -> opb.MissingObjectsResponse:
    return opb.MissingObjectsResponse(object_ids=state.missing_objects(list(object_ids)))
