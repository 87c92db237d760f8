"""The SuperNode's records and their protobuf boundary: routing fields, object ids, payloads."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import corolla.supernode
from corolla.proto.v1 import message_pb2 as mpb
from corolla.proto.v1 import run_pb2 as rpb
from corolla.records import ArrayRecord, ConfigRecord, Context, ErrorCode, Message, RecordDict
from corolla.records.context import UserConfig
from corolla.records.serde import message_from_proto, user_config_to_proto
from corolla.records.wire import encode_context, encode_messages
from corolla.supernode.convert import (
    context_from_proto,
    envelope_from_proto,
    envelope_to_proto,
    new_context,
    run_from_proto,
    run_to_proto,
)
from corolla.supernode.domain import RunInfo
from corolla.supernode.replies import error_reply

LARGE = np.ones(50_000, dtype=np.float32)  # travels as an object


def instruction(arrays: bool = False) -> tuple[Message, mpb.Message]:
    content = RecordDict({"cfg": ConfigRecord({"x": 1})})
    if arrays:
        content["a"] = ArrayRecord.from_numpy_ndarrays([LARGE, LARGE * 2])
    message = Message(content, dst_node_id=7, message_type="train", group_id="g1")
    message.metadata.run_id = 3
    message.metadata.src_node_id = 0
    return message, encode_messages([message])[0][0]


def test_an_envelope_carries_the_routing_fields_and_the_payload_unchanged() -> None:
    message, proto = instruction(arrays=True)
    envelope = envelope_from_proto(proto)
    md = message.metadata
    assert (envelope.message_id, envelope.run_id, envelope.dst_node_id) == (md.message_id, 3, 7)
    assert (envelope.src_node_id, envelope.reply_to_message_id) == (0, "")
    assert (envelope.group_id, envelope.message_type) == ("g1", "train")
    assert (envelope.created_at, envelope.ttl) == (md.created_at, md.ttl)
    assert envelope_to_proto(envelope) == proto
    assert len(envelope.object_ids) == 2
    assert envelope_from_proto(instruction()[1]).object_ids == ()


def test_an_error_reply_answers_the_message_from_its_routing_fields_only() -> None:
    message, proto = instruction(arrays=True)
    reply = error_reply(envelope_from_proto(proto), ErrorCode.NODE_UNAVAILABLE, "gone")
    assert reply.reply_to_message_id == message.metadata.message_id
    assert (reply.run_id, reply.src_node_id, reply.dst_node_id) == (3, 7, 0)
    assert (reply.group_id, reply.message_type) == ("g1", "train")
    assert 0 < reply.ttl <= message.metadata.ttl and reply.object_ids == ()
    decoded = message_from_proto(envelope_to_proto(reply))
    assert decoded.has_error()
    assert (decoded.error.code, decoded.error.reason) == (ErrorCode.NODE_UNAVAILABLE, "gone")
    assert decoded.metadata.message_id == reply.message_id


def test_a_context_keeps_the_object_ids_its_state_references() -> None:
    state = RecordDict({"w": ArrayRecord.from_numpy_ndarrays([LARGE])})
    proto, objects = encode_context(Context(run_id=3, node_id=7, state=state))
    context = context_from_proto(proto)
    assert context.run_id == 3 and context.object_ids == tuple(objects)
    assert mpb.Context.FromString(context.payload) == proto

    fresh = mpb.Context.FromString(new_context(3, 7, {"part": 1}, {"lr": 0.5}).payload)
    assert (fresh.run_id, fresh.node_id) == (3, 7)
    assert fresh.node_config == user_config_to_proto({"part": 1})
    assert fresh.run_config == user_config_to_proto({"lr": 0.5})


configs = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.one_of(
        st.integers(-(2**62), 2**62),
        st.floats(allow_nan=False),
        st.text(max_size=8),
        st.booleans(),
    ),
    max_size=4,
)


@settings(max_examples=50, deadline=None)
@given(override=configs, merged=configs, run_id=st.integers(1, 2**63 - 1))
def test_run_info_round_trips(override: UserConfig, merged: UserConfig, run_id: int) -> None:
    run = RunInfo(run_id, "tests/app", "1.0.0", "ab" * 32, override, merged, "local", "me")
    assert run_from_proto(run_to_proto(run)) == run
    with_status = run_to_proto(run)
    with_status.status.CopyFrom(rpb.RunStatus(status="running"))
    assert run_from_proto(with_status) == run  # the node keeps no status


def test_protobuf_stays_in_the_boundary_modules() -> None:
    """Only the Fleet client, the ClientAppIo servicer and their converter import protobuf."""
    package = Path(corolla.supernode.__file__).parent
    importing: set[str] = set()
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(name.startswith("corolla.proto") for name in names):
                importing.add(module.stem)
    assert importing == {"connection", "clientappio", "convert"}
