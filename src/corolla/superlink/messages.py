"""Turning wire messages into stored ones and back, with the checks every API applies."""

from __future__ import annotations

from corolla.common.errors import FailedPrecondition, InvalidArgument
from corolla.common.protocol import TTL_EXPIRED_REASON
from corolla.proto.v1 import message_pb2 as mpb
from corolla.records.message import ErrorCode
from corolla.records.serde import referenced_object_ids
from corolla.superlink.state import LinkState, StoredMessage

MAX_TTL = 7 * 24 * 3600.0


def to_stored(proto: mpb.Message, state: LinkState) -> StoredMessage:
    md = proto.metadata
    if not md.message_id:
        raise InvalidArgument("message without message_id")
    if not 0 < md.ttl <= MAX_TTL:
        raise InvalidArgument(f"message {md.message_id}: ttl must be in (0, {MAX_TTL}]")
    if not md.message_type:
        raise InvalidArgument(f"message {md.message_id}: message_type missing")
    object_ids = referenced_object_ids([proto]) if proto.HasField("content") else []
    # Only objects this run pushed (or references): an id of another run's object, known or
    # guessed, is no way to read it.
    of_run = state.run_object_ids(md.run_id, object_ids) if object_ids else set()
    missing = [oid for oid in dict.fromkeys(object_ids) if oid not in of_run]
    if missing:
        raise FailedPrecondition(
            f"message {md.message_id} references objects not pushed yet: {', '.join(missing)}"
        )
    return StoredMessage(
        message_id=md.message_id,
        run_id=md.run_id,
        src_node_id=md.src_node_id,
        dst_node_id=md.dst_node_id,
        reply_to_message_id=md.reply_to_message_id,
        message_type=md.message_type,
        created_at=md.created_at,
        ttl=md.ttl,
        payload=proto.SerializeToString(),
        object_ids=tuple(object_ids),
    )


def from_stored(stored: StoredMessage) -> mpb.Message:
    return mpb.Message.FromString(stored.payload)


def error_reply(instruction: StoredMessage, code: int, reason: str, now: float) -> mpb.Message:
    """A reply on behalf of a node that will never answer ``instruction``."""
    return mpb.Message(
        metadata=mpb.Metadata(
            run_id=instruction.run_id,
            message_id=f"{instruction.message_id}-lost",
            src_node_id=instruction.dst_node_id,
            dst_node_id=instruction.src_node_id,
            reply_to_message_id=instruction.message_id,
            message_type=instruction.message_type,
            ttl=max(instruction.created_at + instruction.ttl - now, 1e-3),
            created_at=now,
        ),
        error=mpb.Error(code=code, reason=reason),
    )


def lost_replies(state: LinkState, run_id: int, unanswered: list[str]) -> list[mpb.Message]:
    """Error replies for those of ``unanswered`` that will never be answered (node offline,
    TTL run out), so that a round never waits for a lost node."""
    if not unanswered:
        return []
    lost = state.lost_instructions(run_id, unanswered)
    if not lost:
        return []
    online = set(state.online_node_ids())
    now = state.clock()
    return [lost_reply(m, online, now) for m in lost]


def lost_reply(instruction: StoredMessage, online: set[int], now: float) -> mpb.Message:
    if instruction.dst_node_id not in online:
        return error_reply(
            instruction,
            ErrorCode.NODE_UNAVAILABLE,
            f"node {instruction.dst_node_id} went offline before replying",
            now,
        )
    return error_reply(instruction, ErrorCode.TTL_EXPIRED, TTL_EXPIRED_REASON, now)
