"""A run made ready in a SuperLink's state for tests that call its APIs as an app process, and
instructions stored for its nodes."""

from __future__ import annotations

import uuid

from corolla.proto.v1 import message_pb2 as mpb
from corolla.superlink.state import LinkState, RunStatus, StoredMessage


def running_run(state: LinkState) -> tuple[int, str]:
    """A new run (of a stand-in FAB) in ``running``, and an app token for it."""
    state.store_fab("f" * 64, b"fab")
    run_id = state.create_run(
        fab_id="p/app", fab_version="1", fab_hash="f" * 64, override_config={}, run_config={}
    )
    state.update_run_status(run_id, RunStatus.STARTING)
    state.update_run_status(run_id, RunStatus.RUNNING)
    return run_id, state.create_token(run_id)


def instruction(state: LinkState, run_id: int, node_id: int) -> StoredMessage:
    """A small query to ``node_id``, as the ServerApp's `PushMessages` stores one."""
    message_id = uuid.uuid4().hex
    payload = mpb.Message(metadata=mpb.Metadata(message_id=message_id, run_id=run_id))
    return StoredMessage(
        message_id=message_id,
        run_id=run_id,
        src_node_id=0,
        dst_node_id=node_id,
        reply_to_message_id="",
        message_type="query",
        created_at=state.clock(),
        ttl=60.0,
        payload=payload.SerializeToString(),
    )
