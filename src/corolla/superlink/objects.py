"""The object RPCs of the SuperLink's APIs, after each servicer has checked its caller."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from corolla.common.compression import ACCEPTED, NONE
from corolla.common.errors import NotFound
from corolla.common.objectfiles import file_name
from corolla.common.objects import CHUNK_SIZE
from corolla.common.transfer import receive_objects_into, send_objects
from corolla.proto.v1 import objects_pb2 as opb
from corolla.superlink.state import LinkState


def store_pushed(state: LinkState, run_id: int, frames: Iterable[bytes]) -> opb.PushObjectsResponse:
    """Verify and store pushed objects for ``run_id``, each written as its chunks arrive (the
    state checks the size an object declares, and the run's quota, on its first frame)."""
    return receive_objects_into(
        frames,
        lambda object_id, size: state.open_object(run_id, object_id, size),
        max_object_size=None,
    )


def stream_stored(
    state: LinkState, object_ids: Iterable[str], encoding: str = NONE
) -> Iterator[bytes]:
    """Chunk frames of stored objects (compressed in ``encoding``, negotiated with the puller,
    where that pays); `NotFound` (before any frame) for an unknown id."""
    ids = list(object_ids)
    missing = state.missing_objects(ids)
    if missing:
        raise NotFound(f"unknown objects: {', '.join(missing)}")
    return send_objects(ids, state.object_size, state.read_object, CHUNK_SIZE, encoding)


def missing_response(
    state: LinkState, run_id: int, object_ids: Iterable[str], staging: Path | None = None
) -> opb.MissingObjectsResponse:
    """Objects the caller must push: those not stored, and those stored for other runs only
    (pushing proves the caller has the content; nothing of another run is revealed). With a
    ``staging`` directory (the run's own app process), an object whose file the caller put
    there is taken in instead (its content checked against the id, as a push's would be).
    The reply announces the chunk encodings a push may use."""
    ids = list(object_ids)
    of_run = state.run_object_ids(run_id, ids)
    missing = [oid for oid in dict.fromkeys(ids) if oid not in of_run]
    if staging is not None:
        missing = [oid for oid in missing if not _adopted(state, run_id, oid, staging)]
    return opb.MissingObjectsResponse(object_ids=missing, accept_encodings=ACCEPTED)


def _adopted(state: LinkState, run_id: int, object_id: str, staging: Path) -> bool:
    path = staging / file_name(object_id)
    if not path.exists():
        return False
    state.adopt_file(run_id, object_id, path)
    return True
