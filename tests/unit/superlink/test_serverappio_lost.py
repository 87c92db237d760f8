"""ServerAppIo `PullMessages`: lost instructions come back as error replies, looked for at
most once a `LOST_CHECK_INTERVAL` per run (on the servicer's clock), however often the
ServerApp polls."""

from __future__ import annotations

from typing import Any

from run_helpers import instruction, running_run

from corolla.common.guard import Caller, Credential
from corolla.proto.v1 import message_pb2 as mpb
from corolla.proto.v1 import serverappio_pb2 as spb
from corolla.records import ErrorCode
from corolla.superlink.heartbeats import AppHeartbeats
from corolla.superlink.runs import Runs
from corolla.superlink.serverappio import LOST_CHECK_INTERVAL, ServerAppIoServicer
from corolla.superlink.state import LinkState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Context:
    def __init__(self, run_id: int) -> None:
        self.caller = Caller(Credential.RUN_TOKEN, run_id=run_id)

    def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"aborted: {code} {details}")


def test_lost_instructions_are_reported_at_most_once_an_interval(state: LinkState) -> None:
    clock = Clock()
    servicer = ServerAppIoServicer(Runs(state), heartbeats=AppHeartbeats(), clock=clock)
    run_id, _ = running_run(state)
    node_id = state.create_node(5.0)
    sent = instruction(state, run_id, node_id)
    state.store_instructions([sent])
    message_id = sent.message_id

    def poll() -> list[mpb.Message]:
        request = spb.PullMessagesRequest(run_id=run_id, message_ids=[message_id])
        return list(servicer.PullMessages(request, Context(run_id)).messages)

    assert poll() == []  # looked: the node is online
    state.delete_node(node_id)  # its instruction will never be answered
    clock.now += LOST_CHECK_INTERVAL / 2
    assert poll() == []  # too soon to look again
    clock.now += LOST_CHECK_INTERVAL / 2
    (lost,) = poll()
    assert lost.metadata.reply_to_message_id == message_id
    assert lost.error.code == ErrorCode.NODE_UNAVAILABLE
    clock.now += LOST_CHECK_INTERVAL
    assert poll() == []  # reported once
