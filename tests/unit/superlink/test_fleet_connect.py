"""`Fleet.Connect`, the node's open stream, on a real `grpc.aio` Fleet server over loopback and
a real state: instructions come down as they are stored, once per stream; what the node did not
acknowledge comes again on its next stream; heartbeats are answered; bad input ends the stream
with a status, never the server."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from run_helpers import instruction

from corolla.common.aioserver import AsyncServer
from corolla.common.grpc import server_options
from corolla.common.guard import add_service
from corolla.common.transfer import NODE_ID_KEY
from corolla.proto.v1 import fleet_pb2 as fpb
from corolla.proto.v1 import fleet_pb2_grpc
from corolla.proto.v1 import message_pb2 as mpb
from corolla.superlink import fleet as fleet_api
from corolla.superlink.messages import to_stored
from corolla.superlink.nodeauth import FleetAuth
from corolla.superlink.state import LinkState, RunStatus, SubStatus, _liveness
from corolla.superlink.wakeups import Wakeups

pytestmark = pytest.mark.timeout(60)

READ_TIMEOUT = 20.0  # a bound on each read, never a measure of speed
END = object()


@pytest.fixture
def channel(state: LinkState) -> Iterator[grpc.Channel]:
    server = AsyncServer(max_workers=4, options=server_options(), name="test-fleet")
    wakeups = Wakeups(server.loop)
    state.add_listener(wakeups.notify)
    add_service(
        server,
        fpb.DESCRIPTOR.services_by_name["Fleet"],
        fleet_api.FleetServicer(state, wakeups=wakeups),
        fleet_api.POLICY,
        FleetAuth(state, enabled=False),
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    channel.close()
    assert server.stop(None).wait(10)


@pytest.fixture
def fleet(channel: grpc.Channel) -> fleet_pb2_grpc.FleetStub:
    return fleet_pb2_grpc.FleetStub(channel)


class Stream:
    """A node's side of one stream: send `NodeUp`s, read `NodeDown`s (each read bounded)."""

    def __init__(self, stub: fleet_pb2_grpc.FleetStub, node_id: int) -> None:
        self._up: queue.Queue[Any] = queue.Queue()
        self._down: queue.Queue[Any] = queue.Queue()
        self.call = stub.Connect(
            iter(self._up.get, END), metadata=[(NODE_ID_KEY, str(node_id))], timeout=60
        )
        self._reader = _Reader(self.call, self._down)

    def send(self, **fields: Any) -> None:
        self._up.put(fpb.NodeUp(**fields))

    def beat(self, number: int = 1, runs: tuple[int, ...] = ()) -> fpb.NodeDown:
        self.send(beat=number, heartbeat_interval=5.0, active_run_ids=runs)
        return self.read(lambda down: down.beat == number)

    def read(self, wanted: Any = None) -> fpb.NodeDown:
        while True:
            down = self._down.get(timeout=READ_TIMEOUT)
            if isinstance(down, grpc.RpcError):
                raise down
            if wanted is None or wanted(down):
                return down

    def messages(self) -> list[str]:
        down = self.read(lambda d: len(d.messages) > 0)
        return [m.metadata.message_id for m in down.messages]

    def status(self) -> grpc.StatusCode:
        """The code the stream ended with."""
        while True:
            down = self._down.get(timeout=READ_TIMEOUT)
            if isinstance(down, grpc.RpcError):
                return down.code()
            if down is END:
                return grpc.StatusCode.OK

    def half_close(self) -> None:
        """Send nothing more: the server ends the stream once it has read everything."""
        self._up.put(END)

    def close(self) -> None:
        self._up.put(END)
        self.call.cancel()
        self._reader.join(READ_TIMEOUT)


class _Reader:
    def __init__(self, call: Any, down: queue.Queue[Any]) -> None:
        def read() -> None:
            try:
                for message in call:
                    down.put(message)
                down.put(END)
            except grpc.RpcError as exc:
                down.put(exc)

        self._thread = threading.Thread(target=read, daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


@pytest.fixture
def streams(fleet: fleet_pb2_grpc.FleetStub) -> Iterator[Any]:
    opened: list[Stream] = []

    def open_stream(node_id: int) -> Stream:
        stream = Stream(fleet, node_id)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


def new_run(state: LinkState) -> int:
    return state.create_run(
        fab_id="p/a", fab_version="1", fab_hash="f" * 64, override_config={}, run_config={}
    )


def store(state: LinkState, run_id: int, node_id: int) -> str:
    message = instruction(state, run_id, node_id)
    state.store_instructions([message])
    return message.message_id


def test_instructions_come_down_as_they_are_stored_each_once_per_stream(
    state: LinkState, streams: Any
) -> None:
    node_id = state.create_node(5.0)
    run_id = new_run(state)
    first = store(state, run_id, node_id)  # before the stream: the first look finds it
    stream = streams(node_id)
    assert stream.beat().beat == 1
    assert stream.messages() == [first]
    second = store(state, run_id, node_id)  # while it is open: woken, not polled
    assert stream.messages() == [second]  # the first, unacknowledged, is not sent again
    assert stream.beat(2).beat == 2


def two_sent(state: LinkState, streams: Any) -> tuple[int, Stream, str, str]:
    """A node with a stream open that brought it two instructions: the node, the stream, the
    instructions' ids."""
    node_id = state.create_node(5.0)
    run_id = new_run(state)
    first, second = store(state, run_id, node_id), store(state, run_id, node_id)
    stream = streams(node_id)
    stream.beat()
    got = stream.messages()
    while len(got) < 2:
        got += stream.messages()
    assert sorted(got) == sorted([first, second])
    return node_id, stream, first, second


def test_what_the_node_did_not_acknowledge_comes_again_on_its_next_stream(
    state: LinkState, streams: Any
) -> None:
    node_id, stream, kept, dropped = two_sent(state, streams)
    stream.send(ack_message_ids=[kept])
    assert stream.beat(2).beat == 2  # the ack was read before the beat (one stream, in order)
    # ... and reaches the state with the stream's next take: until then, what is not
    # acknowledged there includes ``kept``.
    deadline = time.monotonic() + READ_TIMEOUT
    while unacknowledged(state, node_id) != [dropped] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert unacknowledged(state, node_id) == [dropped]
    stream.close()  # cut before it acknowledged ``dropped``
    again = streams(node_id)
    again.beat()
    assert again.messages() == [dropped]


def unacknowledged(state: LinkState, node_id: int) -> list[str]:
    """The node's instructions the state would hand out again (taken: they are delivered
    already, so nothing changes)."""
    return [m.message_id for m in state.take_instructions({node_id: []}, 10)[node_id]]


def test_an_acknowledgement_that_came_just_before_the_stream_ended_is_kept(
    state: LinkState, streams: Any
) -> None:
    node_id, stream, kept, dropped = two_sent(state, streams)
    stream.send(ack_message_ids=[kept])
    stream.half_close()  # at once: the stream ends as the acknowledgement comes in
    assert stream.status() == grpc.StatusCode.OK
    assert unacknowledged(state, node_id) == [dropped]  # passed on before the stream ended


def test_an_answered_instruction_is_not_sent_again(state: LinkState, streams: Any) -> None:
    node_id = state.create_node(5.0)
    run_id = new_run(state)
    answered = store(state, run_id, node_id)
    stream = streams(node_id)
    stream.beat()
    assert stream.messages() == [answered]
    reply = reply_for(state, run_id, node_id, answered)
    state.store_replies(node_id, [to_stored(reply, state)])
    stream.close()
    again = streams(node_id)
    again.beat()
    later = store(state, run_id, node_id)
    assert again.messages() == [later]


def reply_for(state: LinkState, run_id: int, node_id: int, answered: str) -> mpb.Message:
    return mpb.Message(
        metadata=mpb.Metadata(
            message_id=uuid.uuid4().hex,
            run_id=run_id,
            src_node_id=node_id,
            dst_node_id=0,
            reply_to_message_id=answered,
            message_type="query",
            created_at=state.clock(),
            ttl=60.0,
        )
    )


def test_replies_pushed_on_the_stream_are_stored_once_and_answered(
    state: LinkState, streams: Any
) -> None:
    node_id, other = state.create_node(5.0), state.create_node(5.0)
    run_id = new_run(state)
    mine, theirs = store(state, run_id, node_id), store(state, run_id, other)
    stream = streams(node_id)
    stream.beat()
    assert stream.messages() == [mine]
    reply = reply_for(state, run_id, node_id, mine)
    stream.send(push=1, replies=[reply])
    assert stream.read(lambda d: d.push == 1).push_status.code == 0
    stream.send(push=2, replies=[reply])  # again (its answer was lost): stored once
    assert stream.read(lambda d: d.push == 2).push_status.code == 0
    stored = state.pull_replies(run_id, [mine])
    assert [m.message_id for m in stored] == [reply.metadata.message_id]
    # Refused pushes get the status a PushMessages call would; the stream goes on.
    as_other = reply_for(state, run_id, other, theirs)
    stream.send(push=3, replies=[as_other])
    refused = stream.read(lambda d: d.push == 3).push_status
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert f"cannot send as node {other}" in refused.message
    not_sent = reply_for(state, run_id, node_id, theirs)  # not its instruction
    stream.send(push=4, replies=[not_sent])
    assert stream.read(lambda d: d.push == 4).push_status.code != 0
    assert state.pull_replies(run_id, [theirs]) == []
    assert stream.beat(2).beat == 2


def test_a_push_of_too_many_replies_ends_the_stream(state: LinkState, streams: Any) -> None:
    node_id = state.create_node(5.0)
    run_id = new_run(state)
    stream = streams(node_id)
    stream.beat()
    replies = [reply_for(state, run_id, node_id, uuid.uuid4().hex) for _ in range(65)]
    stream.send(push=1, replies=replies)
    assert stream.status() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_end_of_an_active_run_comes_down(state: LinkState, streams: Any) -> None:
    node_id = state.create_node(5.0)
    run_id, ended = new_run(state), new_run(state)
    state.update_run_status(ended, RunStatus.FINISHED, SubStatus.STOPPED, "stopped by user")
    stream = streams(node_id)
    answer = stream.beat(runs=(run_id, ended, 424242))
    assert sorted(answer.finished_run_ids) == sorted([ended, 424242])
    state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.COMPLETED)
    down = stream.read(lambda d: run_id in d.finished_run_ids)
    assert list(down.finished_run_ids) == [run_id]


def test_the_end_of_a_run_the_node_was_sent_work_of_comes_down_before_its_next_heartbeat(
    state: LinkState, streams: Any
) -> None:
    node_id = state.create_node(5.0)
    run_id = new_run(state)
    stream = streams(node_id)
    stream.beat()  # names no run
    store(state, run_id, node_id)
    stream.messages()
    state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.COMPLETED)
    down = stream.read(lambda d: len(d.finished_run_ids) > 0)
    assert list(down.finished_run_ids) == [run_id]


def test_an_unknown_node_is_told_to_register(state: LinkState, streams: Any) -> None:
    stream = streams(4242)
    stream.send(beat=1, heartbeat_interval=5.0)
    assert stream.status() == grpc.StatusCode.NOT_FOUND


def test_a_node_removed_while_connected_is_told_to_register(state: LinkState, streams: Any) -> None:
    node_id = state.create_node(5.0)
    stream = streams(node_id)
    stream.beat()
    state.delete_node(node_id)
    assert stream.status() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "first",
    [
        fpb.NodeUp(ack_message_ids=["x"]),  # not a heartbeat
        fpb.NodeUp(beat=1, heartbeat_interval=0.0),  # out of range
        fpb.NodeUp(beat=1, heartbeat_interval=5.0, ack_message_ids=["x"] * 5000),
        fpb.NodeUp(beat=1, heartbeat_interval=5.0, active_run_ids=list(range(1, 2000))),
    ],
    ids=["no-heartbeat", "bad-interval", "too-many-acks", "too-many-runs"],
)
def test_bad_input_ends_the_stream_with_invalid_argument(
    state: LinkState, streams: Any, first: fpb.NodeUp
) -> None:
    node_id = state.create_node(5.0)
    stream = streams(node_id)
    stream._up.put(first)
    assert stream.status() == grpc.StatusCode.INVALID_ARGUMENT
    # The server goes on serving.
    assert streams(node_id).beat().beat == 1


def test_a_malformed_frame_ends_the_stream_with_invalid_argument(
    state: LinkState, channel: grpc.Channel
) -> None:
    node_id = state.create_node(5.0)
    raw = channel.stream_stream("/corolla.proto.v1.Fleet/Connect")
    frames = iter([b"\xff\xff\xff"])
    with pytest.raises(grpc.RpcError) as failed:
        list(raw(frames, metadata=[(NODE_ID_KEY, str(node_id))], timeout=READ_TIMEOUT))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_heartbeats_on_streams_are_answered_from_memory_and_written_by_one_writer(
    state: LinkState, streams: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_liveness, "FLUSH_INTERVAL", 0.0)  # a batch is due at once
    monkeypatch.setattr(fleet_api, "WRITE_HEARTBEATS_EVERY", 0.01)
    blocking, writes = [], []
    real_heartbeat, real_write = state.heartbeat, state.write_heartbeats
    monkeypatch.setattr(state, "heartbeat", lambda *a: (blocking.append(a), real_heartbeat(*a))[1])
    monkeypatch.setattr(state, "write_heartbeats", lambda: (writes.append(1), real_write())[1])
    node_id = state.create_node(5.0)
    stream = streams(node_id)
    for number in (1, 2, 3):
        stream.beat(number)  # answered, a batch due or not
    written = len(writes)
    deadline = time.monotonic() + READ_TIMEOUT
    while len(writes) == written and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(writes) > written  # the writer keeps going
    assert blocking == []  # no heartbeat waited for the database
