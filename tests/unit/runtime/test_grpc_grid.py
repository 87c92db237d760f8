"""`GrpcGrid` against a real in-process SuperLink: replies survive a lost answer, and calls
ride out a SuperLink restart on the same database and port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from run_helpers import running_run

from corolla.common.errors import Unavailable
from corolla.common.grpc import create_channel
from corolla.proto.v1 import serverappio_pb2 as spb
from corolla.proto.v1.serverappio_pb2_grpc import ServerAppIoStub
from corolla.records import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from corolla.records.serde import message_from_proto, message_to_proto
from corolla.records.wire import encode_messages
from corolla.runtime.grid import GrpcGrid
from corolla.superlink.config import SuperLinkConfig
from corolla.superlink.link import SuperLink
from corolla.superlink.messages import from_stored, to_stored

pytestmark = pytest.mark.timeout(60)


def superlink(database: str, serverappio: str = "127.0.0.1:0") -> SuperLink:
    link = SuperLink(
        SuperLinkConfig(
            serverappio_address=serverappio,
            fleet_address="127.0.0.1:0",
            exec_address="127.0.0.1:0",
            database=database,
            app_heartbeat_timeout=3600,
        )
    )
    link.start()
    return link


@pytest.fixture
def link(tmp_path: Path) -> Iterator[SuperLink]:
    started = superlink(str(tmp_path / "state.db"))
    yield started
    started.stop()


def answer(link: SuperLink, node_id: int, instruction_id: str) -> str:
    """The node's side: take the instruction and store a reply; returns the reply's id."""
    (stored,) = link.state.pull_instructions(node_id, limit=1)
    assert stored.message_id == instruction_id
    original = message_from_proto(from_stored(stored), {})
    reply = Message(RecordDict({"out": ConfigRecord({"ok": 1})}), reply_to=original)
    reply.metadata.src_node_id = node_id
    link.state.store_replies(node_id, [to_stored(message_to_proto(reply), link.state)])
    return reply.metadata.message_id


def instruction(node_id: int) -> Message:
    return Message(
        RecordDict({"cfg": ConfigRecord({"x": 1})}),
        dst_node_id=node_id,
        message_type=MessageType.TRAIN,
        ttl=600,
    )


def test_a_reply_whose_answer_was_lost_is_delivered_again(link: SuperLink) -> None:
    run_id, token = running_run(link.state)
    node_id = link.state.create_node(60.0)
    channel = create_channel(link.addresses["serverappio"], insecure=True)
    try:
        grid = GrpcGrid(channel, token, run_id)
        (sent,) = grid.push_messages([instruction(node_id)])
        reply_id = answer(link, node_id, sent)
        assert [m.metadata.message_id for m in grid.pull_messages([sent])] == [reply_id]
        # A second ServerApp process of the run (the first one's answer never arrived):
        again = GrpcGrid(channel, token, run_id)
        assert [m.metadata.message_id for m in again.pull_messages([sent])] == [reply_id]
        # The first grid acknowledges on its next call: the reply is gone for good.
        assert grid.pull_messages([sent]) == []
        assert again.pull_messages([sent]) == []
    finally:
        channel.close()


def test_a_retried_push_is_not_delivered_twice(link: SuperLink) -> None:
    run_id, token = running_run(link.state)
    node_id = link.state.create_node(60.0)
    channel = create_channel(link.addresses["serverappio"], insecure=True)
    try:
        grid = GrpcGrid(channel, token, run_id)
        message = instruction(node_id)
        first = grid.push_messages([message])
        assert grid.push_messages([message]) == first  # as a retry after a lost answer
        assert len(link.state.pull_instructions(node_id, limit=10)) == 1
    finally:
        channel.close()


def test_calls_ride_out_a_superlink_restart(tmp_path: Path) -> None:
    database = str(tmp_path / "state.db")
    first = superlink(database)
    address = first.addresses["serverappio"]
    run_id, token = running_run(first.state)
    node_id = first.state.create_node(3600.0)
    first.stop()  # the SuperLink is away ...
    channel = create_channel(address, insecure=True)
    restarted: list[SuperLink] = []

    def come_back() -> None:
        time.sleep(1.0)
        restarted.append(superlink(database, serverappio=address))  # same database and port

    thread = threading.Thread(target=come_back)
    thread.start()
    try:
        grid = GrpcGrid(channel, token, run_id, retry_window=30)
        assert grid.get_node_ids() == [node_id]  # ... and the call waited for it
    finally:
        thread.join(timeout=30)
        channel.close()
        for link in restarted:
            link.stop()


def test_calls_give_up_after_the_retry_window(tmp_path: Path) -> None:
    link = superlink(str(tmp_path / "state.db"))
    address = link.addresses["serverappio"]
    run_id, token = running_run(link.state)
    link.stop()
    channel = create_channel(address, insecure=True)
    try:
        grid = GrpcGrid(channel, token, run_id, retry_window=1.0)
        with pytest.raises(Unavailable):  # translated, like every failure, after the window
            grid.get_node_ids()
    finally:
        channel.close()


@pytest.mark.parametrize("shared", [True, False])
def test_reply_arrays_are_mapped_from_the_superlinks_files_when_it_shares_them(
    link: SuperLink, tmp_path: Path, shared: bool
) -> None:
    run_id, token = running_run(link.state)
    node_id = link.state.create_node(60.0)
    channel = create_channel(link.addresses["serverappio"], insecure=True)
    try:
        inputs = ServerAppIoStub(channel).PullAppInputs(
            spb.PullAppInputsRequest(token=token), timeout=10
        )
        assert inputs.object_dir == str(link.state.object_directory)  # our own child
        empty = tmp_path / "elsewhere"
        empty.mkdir()
        grid = GrpcGrid(
            channel, token, run_id, object_dir=inputs.object_dir if shared else str(empty)
        )
        pulls: list[list[str]] = []
        real_pull = grid._link.objects.pull
        grid._link.objects.pull = lambda wanted, **kw: (  # type: ignore[method-assign]
            pulls.append(wanted),
            real_pull(wanted, **kw),
        )[1]
        (sent,) = grid.push_messages([instruction(node_id)])
        (stored,) = link.state.pull_instructions(node_id, limit=1)
        original = message_from_proto(from_stored(stored), {})
        weights = np.arange(100_000, dtype=np.float32)  # above the inline limit: an object
        reply = Message(RecordDict({"w": ArrayRecord([weights])}), reply_to=original)
        reply.metadata.src_node_id = node_id
        protos, objects = encode_messages([reply])
        for object_id, data in objects.items():
            link.state.store_object(run_id, object_id, data)
        link.state.store_replies(node_id, [to_stored(protos[0], link.state)])
        (received,) = grid.pull_messages([sent])
        np.testing.assert_array_equal(received.content["w"].to_numpy_ndarrays()[0], weights)
        assert pulls == ([] if shared else [list(objects)])  # the files, else the RPC
    finally:
        channel.close()
