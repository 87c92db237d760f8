"""Protobuf <-> the SuperNode's records (`domain.py`); used by the boundary modules only.

Messages and contexts stay encoded: only their routing fields and referenced object ids are
read, never their records.
"""

from __future__ import annotations

from corolla.proto.v1 import message_pb2 as mpb
from corolla.proto.v1 import run_pb2 as rpb
from corolla.records import Message
from corolla.records.context import UserConfig
from corolla.records.serde import (
    referenced_object_ids,
    user_config_from_proto,
    user_config_to_proto,
)
from corolla.records.wire import encode_messages
from corolla.supernode.domain import AppContext, Envelope, Fab, RunInfo


def envelope_from_proto(proto: mpb.Message) -> Envelope:
    md = proto.metadata
    return Envelope(
        message_id=md.message_id,
        run_id=md.run_id,
        src_node_id=md.src_node_id,
        dst_node_id=md.dst_node_id,
        reply_to_message_id=md.reply_to_message_id,
        group_id=md.group_id,
        message_type=md.message_type,
        created_at=md.created_at,
        ttl=md.ttl,
        payload=proto.SerializeToString(),
        object_ids=tuple(referenced_object_ids([proto])),
    )


def envelope_to_proto(envelope: Envelope) -> mpb.Message:
    return mpb.Message.FromString(envelope.payload)


def encode_envelope(message: Message) -> Envelope:
    """The envelope of a message the node writes itself (error replies: no objects)."""
    protos, _ = encode_messages([message])
    return envelope_from_proto(protos[0])


def run_from_proto(proto: rpb.Run) -> RunInfo:
    return RunInfo(
        run_id=proto.run_id,
        fab_id=proto.fab_id,
        fab_version=proto.fab_version,
        fab_hash=proto.fab_hash,
        override_config=user_config_from_proto(proto.override_config),
        run_config=user_config_from_proto(proto.run_config),
        federation=proto.federation,
        owner=proto.owner,
    )


def run_to_proto(run: RunInfo) -> rpb.Run:
    return rpb.Run(
        run_id=run.run_id,
        fab_id=run.fab_id,
        fab_version=run.fab_version,
        fab_hash=run.fab_hash,
        override_config=user_config_to_proto(run.override_config),
        run_config=user_config_to_proto(run.run_config),
        federation=run.federation,
        owner=run.owner,
    )


def fab_from_proto(proto: rpb.Fab) -> Fab:
    return Fab(hash=proto.hash, content=proto.content)


def fab_to_proto(fab: Fab) -> rpb.Fab:
    return rpb.Fab(hash=fab.hash, content=fab.content)


def context_from_proto(proto: mpb.Context) -> AppContext:
    return AppContext(
        run_id=proto.run_id,
        payload=proto.SerializeToString(),
        object_ids=tuple(referenced_object_ids([proto])),
    )


def context_to_proto(context: AppContext) -> mpb.Context:
    return mpb.Context.FromString(context.payload)


def new_context(
    run_id: int, node_id: int, node_config: UserConfig, run_config: UserConfig
) -> AppContext:
    """A run's first context on this node: its configs and an empty state."""
    proto = mpb.Context(
        run_id=run_id,
        node_id=node_id,
        node_config=user_config_to_proto(node_config),
        run_config=user_config_to_proto(run_config),
    )
    return context_from_proto(proto)
