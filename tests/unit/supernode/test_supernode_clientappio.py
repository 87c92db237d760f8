"""The ClientAppIo servicer over real gRPC: tokens, long polls, reply checks, objects."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
from object_wire import WireRecorder, encodings, pull_frames

from corolla.common.compression import NONE, ZSTD
from corolla.common.errors import FailedPrecondition
from corolla.common.grpc import bind, create_channel, create_server
from corolla.common.objects import object_id_of
from corolla.common.transfer import TOKEN_KEY, ObjectClient
from corolla.proto.v1 import clientappio_pb2 as cpb
from corolla.proto.v1 import clientappio_pb2_grpc
from corolla.proto.v1 import message_pb2 as mpb
from corolla.proto.v1 import objects_pb2 as opb
from corolla.records import ArrayRecord, ConfigRecord, Message, RecordDict
from corolla.records.serde import message_from_proto
from corolla.records.wire import encode_messages
from corolla.runtime.clientapp_run import AppIo
from corolla.supernode.clientappio import ClientAppIoServicer, add_clientappio
from corolla.supernode.connection import FleetConnection
from corolla.supernode.convert import envelope_from_proto, new_context
from corolla.supernode.domain import Envelope, Fab, RunInfo
from corolla.supernode.outbox import Outbox
from corolla.supernode.runs import RunState, RunTable

pytestmark = pytest.mark.timeout(30)
SERVICE = "corolla.proto.v1.ClientAppIo"
SECRET = "s3cret-" * 4


@dataclass
class Harness:
    runs: RunTable
    outbox: Outbox
    state: RunState
    stub: clientappio_pb2_grpc.ClientAppIoStub
    channel: grpc.Channel

    def objects(self, token: str) -> ObjectClient:
        return ObjectClient(self.channel, SERVICE, metadata=[(TOKEN_KEY, token)])


@contextlib.contextmanager
def harness(
    attachable: bool = True,
    wrap: Callable[[ClientAppIoServicer], None] | None = None,
    compression: str = NONE,
) -> Iterator[Harness]:
    """A ClientAppIo servicer on a free port with one open run; ``wrap`` may patch the
    servicer's methods before they are registered; ``compression``: its setting."""
    runs = RunTable(attachable=attachable)
    connection = FleetConnection("127.0.0.1:1", insecure=True)  # never dialled: outbox not run
    outbox = Outbox(connection, lambda: 5)
    state = runs.open(
        RunInfo(3, "tests/app", "1.0.0", "ab" * 32, override_config={}, run_config={}),
        Fab(hash="ab" * 32, content=b"zip"),
        new_context(3, 5, {}, {}),
    )
    servicer = ClientAppIoServicer(runs, outbox, SECRET, compression=compression)
    if wrap is not None:
        wrap(servicer)
    server = create_server(max_workers=8)
    add_clientappio(server, servicer)
    port = bind(server, "127.0.0.1:0", None)
    server.start()
    channel = create_channel(f"127.0.0.1:{port}", insecure=True)
    try:
        yield Harness(runs, outbox, state, clientappio_pb2_grpc.ClientAppIoStub(channel), channel)
    finally:
        channel.close()
        connection.close()
        server.stop(0).wait(5)


@pytest.fixture
def io() -> Iterator[Harness]:
    with harness() as started:
        yield started


def message_for(
    node_id: int = 5, run_id: int = 3, arrays: bool = False
) -> tuple[Envelope, dict[str, Any]]:
    content = RecordDict({"cfg": ConfigRecord({"x": 1})})
    if arrays:
        content["a"] = ArrayRecord.from_numpy_ndarrays([np.ones(50_000, dtype=np.float32)])
    message = Message(content, dst_node_id=node_id, message_type="train")
    message.metadata.run_id = run_id
    message.metadata.src_node_id = 0
    protos, objects = encode_messages([message])
    return envelope_from_proto(protos[0]), objects


def test_every_rpc_refuses_callers_without_credentials(io: Harness) -> None:
    """The access policy, checked against the full method list: a new RPC fails this test."""
    calls: dict[str, Callable[[], Any]] = {
        "RequestRun": lambda: io.stub.RequestRun(
            cpb.ClientRequestRunRequest(secret="wrong-secret-0123456789"), timeout=5
        ),
        "Heartbeat": lambda: io.stub.Heartbeat(cpb.ClientHeartbeatRequest(token="x"), timeout=5),
        "PullAppInputs": lambda: io.stub.PullAppInputs(
            cpb.ClientPullAppInputsRequest(token="nope"), timeout=5
        ),
        "PullMessage": lambda: io.stub.PullMessage(
            cpb.ClientPullMessageRequest(token="nope"), timeout=5
        ),
        "PushMessage": lambda: io.stub.PushMessage(
            cpb.ClientPushMessageRequest(token="nope"), timeout=5
        ),
        "PushLogs": lambda: io.stub.PushLogs(
            cpb.ClientPushLogsRequest(token="", lines=["x"]), timeout=5
        ),
        "PushObjects": lambda: io.objects("nope").push(
            {object_id_of(b"x"): b"x"}, ids={}, timeout=5
        ),
        "PullObjects": lambda: io.objects("nope").pull([object_id_of(b"x")], ids={}, timeout=5),
        "MissingObjects": lambda: io.stub.MissingObjects(
            opb.MissingObjectsRequest(object_ids=["a"]), timeout=5
        ),
    }
    methods = {m.name for m in cpb.DESCRIPTOR.services_by_name["ClientAppIo"].methods}
    assert set(calls) == methods
    for name, call in calls.items():
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, name


@pytest.mark.parametrize(("secret", "detail"), [("", "missing"), ("x" * 32, "wrong")])
def test_request_run_needs_the_secret(io: Harness, secret: str, detail: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        io.stub.RequestRun(cpb.ClientRequestRunRequest(secret=secret, wait_seconds=5), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert detail in (info.value.details() or "")


def test_request_run_hands_a_waiting_run_to_one_caller_with_a_fresh_token(io: Harness) -> None:
    started = time.monotonic()
    empty = io.stub.RequestRun(
        cpb.ClientRequestRunRequest(secret=SECRET, wait_seconds=0.3), timeout=5
    )
    assert (empty.run_id, empty.token) == (0, "")  # nothing needs an app process
    assert 0.25 < time.monotonic() - started < 3

    sent, _ = message_for()
    threading.Timer(0.2, lambda: io.runs.enqueue(io.state, sent)).start()
    old_token = io.state.token
    handed = io.stub.RequestRun(
        cpb.ClientRequestRunRequest(secret=SECRET, wait_seconds=10), timeout=15
    )
    assert handed.run_id == 3 and handed.token not in ("", old_token)
    again = io.stub.RequestRun(
        cpb.ClientRequestRunRequest(secret=SECRET, wait_seconds=0.2), timeout=5
    )
    assert again.run_id == 0  # one process per run: it is attached now
    with pytest.raises(grpc.RpcError) as info:
        io.stub.Heartbeat(cpb.ClientHeartbeatRequest(token=old_token), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    beat = io.stub.Heartbeat(cpb.ClientHeartbeatRequest(token=handed.token), timeout=5)
    assert beat.run_active
    pulled = io.stub.PullMessage(
        cpb.ClientPullMessageRequest(token=handed.token, wait_seconds=1), timeout=5
    )
    assert pulled.message.metadata.message_id == sent.message_id
    io.runs.deactivate(io.state)
    beat = io.stub.Heartbeat(cpb.ClientHeartbeatRequest(token=handed.token), timeout=5)
    assert not beat.run_active


def test_detached_process_loses_its_token_and_its_long_poll_ends(io: Harness) -> None:
    sent, _ = message_for()
    io.runs.enqueue(io.state, sent)
    handed = io.runs.hand_out(1.0)
    assert handed is not None
    _, token = handed
    pulled = io.stub.PullMessage(
        cpb.ClientPullMessageRequest(token=token, wait_seconds=1), timeout=5
    )
    assert pulled.HasField("message")

    threading.Timer(0.3, lambda: io.runs.detach(io.state)).start()
    started = time.monotonic()
    response = io.stub.PullMessage(
        cpb.ClientPullMessageRequest(token=token, wait_seconds=10), timeout=15
    )
    assert not response.run_active and time.monotonic() - started < 3
    assert not io.state.inflight  # detach took the message it held
    with pytest.raises(grpc.RpcError) as info:
        io.stub.PullMessage(cpb.ClientPullMessageRequest(token=token), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_request_run_is_refused_in_isolation_subprocess() -> None:
    runs = RunTable(attachable=False)
    with pytest.raises(FailedPrecondition, match="isolation subprocess"):
        runs.hand_out(0.1)


def test_app_inputs_carry_run_fab_and_context(io: Harness) -> None:
    inputs = io.stub.PullAppInputs(cpb.ClientPullAppInputsRequest(token=io.state.token), timeout=5)
    assert inputs.run.run_id == 3
    assert inputs.fab.content == b"zip"
    assert (inputs.context.run_id, inputs.context.node_id) == (3, 5)


def test_long_poll_returns_as_soon_as_a_message_is_queued(io: Harness) -> None:
    sent, _ = message_for()
    result: dict[str, float] = {}

    def enqueue_later() -> None:
        time.sleep(0.3)
        result["queued"] = time.monotonic()
        io.runs.enqueue(io.state, sent)

    threading.Thread(target=enqueue_later).start()
    request = cpb.ClientPullMessageRequest(token=io.state.token, wait_seconds=10)
    response = io.stub.PullMessage(request, timeout=15)
    latency = time.monotonic() - result["queued"]
    assert response.run_active
    assert response.message.metadata.message_id == sent.message_id
    assert latency < 0.1, f"long poll answered {latency * 1000:.0f} ms after the message came"


def test_long_poll_times_out_empty_and_reports_an_ended_run(io: Harness) -> None:
    request = cpb.ClientPullMessageRequest(token=io.state.token, wait_seconds=0.2)
    response = io.stub.PullMessage(request, timeout=5)
    assert not response.HasField("message") and response.run_active
    io.runs.deactivate(io.state)
    started = time.monotonic()
    response = io.stub.PullMessage(
        cpb.ClientPullMessageRequest(token=io.state.token, wait_seconds=10), timeout=15
    )
    assert not response.run_active
    assert time.monotonic() - started < 1


def test_push_message_accepts_only_replies_to_delivered_messages(io: Harness) -> None:
    sent, _ = message_for()
    received = message_from_proto(mpb.Message.FromString(sent.payload))
    stray = encode_messages([Message(RecordDict(), reply_to=received)])[0][0]
    with pytest.raises(grpc.RpcError) as info:
        io.stub.PushMessage(
            cpb.ClientPushMessageRequest(token=io.state.token, message=stray), timeout=5
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    io.runs.enqueue(io.state, sent)
    pulled = io.stub.PullMessage(
        cpb.ClientPullMessageRequest(token=io.state.token, wait_seconds=1), timeout=5
    )
    assert pulled.message.metadata.message_id == sent.message_id
    context = mpb.Context(run_id=3, node_id=5)
    context.node_config.items.add(key="seen")
    io.stub.PushMessage(
        cpb.ClientPushMessageRequest(token=io.state.token, message=stray, context=context),
        timeout=5,
    )
    assert mpb.Context.FromString(io.state.context.payload).node_config.items[0].key == "seen"
    assert not io.state.inflight
    with pytest.raises(grpc.RpcError) as info:  # answered already
        io.stub.PushMessage(
            cpb.ClientPushMessageRequest(token=io.state.token, message=stray), timeout=5
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_objects_round_trip_through_the_run_cache(io: Harness) -> None:
    _, objects = message_for(arrays=True)
    assert objects
    client = io.objects(io.state.token)
    assert client.push(objects, ids={"token": io.state.token}, timeout=5) == 1
    assert client.push(objects, ids={"token": io.state.token}, timeout=5) == 0  # has it now
    pulled = client.pull(list(objects), ids={"token": io.state.token}, timeout=5)
    assert {k: bytes(v) for k, v in pulled.items()} == {k: bytes(v) for k, v in objects.items()}
    with pytest.raises(grpc.RpcError) as info:
        client.pull([object_id_of(b"absent")], ids={}, timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("setting", "accept", "expected"),
    [
        pytest.param(ZSTD, [ZSTD], {1}, id="both-on"),
        pytest.param(ZSTD, [], {0}, id="clientapp-does-not-accept"),
        pytest.param(NONE, [ZSTD], {0}, id="supernode-off"),
    ],
)
def test_objects_sent_to_a_clientapp_are_compressed_only_when_both_sides_say_so(
    setting: str, accept: list[str], expected: set[int]
) -> None:
    model = np.zeros(400_000, dtype=np.float32).tobytes()  # 1.6 MB: two chunks
    with harness(compression=setting) as io:
        token = io.state.token
        client = io.objects(token)
        client.push({object_id_of(model): model}, ids={"token": token}, timeout=5)
        request = opb.PullObjectsRequest(object_ids=[object_id_of(model)], accept_encodings=accept)
        frames = pull_frames(io.channel, SERVICE, request, [(TOKEN_KEY, token)])
        assert encodings(frames) == expected
        pulled = client.pull([object_id_of(model)], ids={"token": token}, timeout=5)
        assert bytes(pulled[object_id_of(model)]) == model


def test_the_supernode_takes_compressed_objects_from_a_clientapp(io: Harness) -> None:
    token = io.state.token
    reply = opb.MissingObjectsResponse.FromString(
        io.channel.unary_unary(f"/{SERVICE}/MissingObjects")(
            opb.MissingObjectsRequest(object_ids=["ab" * 32]).SerializeToString(),
            metadata=[(TOKEN_KEY, token)],
            timeout=5,
        )
    )
    assert list(reply.accept_encodings) == [ZSTD]
    update = b"\x03" * 300_000 + bytes(900_000)
    recorder = WireRecorder()
    channel = grpc.intercept_channel(io.channel, recorder)
    client = ObjectClient(channel, SERVICE, [(TOKEN_KEY, token)], compression=ZSTD)
    assert client.push({object_id_of(update): update}, ids={"token": token}, timeout=5) == 1
    assert encodings(recorder.pushed) == {1}
    stored = io.state.objects.open(object_id_of(update))
    try:
        assert b"".join(stored.chunks(1 << 20)) == update
    finally:
        stored.close()


def test_unknown_run_token_after_the_run_is_dropped(io: Harness) -> None:
    io.runs.drop(io.state)
    with pytest.raises(grpc.RpcError) as info:
        io.stub.PullAppInputs(cpb.ClientPullAppInputsRequest(token=io.state.token), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_waits_that_are_not_finite_numbers_are_refused(io: Harness) -> None:
    for wait in (float("nan"), float("inf"), -1.0):
        with pytest.raises(grpc.RpcError) as pull:
            io.stub.PullMessage(
                cpb.ClientPullMessageRequest(token=io.state.token, wait_seconds=wait), timeout=5
            )
        assert pull.value.code() == grpc.StatusCode.INVALID_ARGUMENT, wait
        with pytest.raises(grpc.RpcError) as request_run:
            io.stub.RequestRun(
                cpb.ClientRequestRunRequest(secret=SECRET, wait_seconds=wait), timeout=5
            )
        assert request_run.value.code() == grpc.StatusCode.INVALID_ARGUMENT, wait


def test_our_own_child_moves_objects_through_the_run_files_not_the_object_rpcs() -> None:
    """Isolation subprocess: the app process maps the message's objects from the run's
    directory and places its reply's there; no object stream runs either way."""
    streams: list[str] = []

    def count_streams(servicer: ClientAppIoServicer) -> None:
        for name in ("PullObjects", "PushObjects"):
            real = getattr(servicer, name)
            setattr(servicer, name, lambda *a, _n=name, _r=real: (streams.append(_n), _r(*a))[1])

    with harness(attachable=False, wrap=count_streams) as io:
        state = io.state
        sent, objects = message_for(arrays=True)
        for object_id, data in objects.items():  # as the intake leaves them
            sink = state.objects.sink(object_id, len(data))
            sink.write(memoryview(data))
            sink.commit()
        io.runs.enqueue(state, sent)
        app = AppIo(io.channel, state.token)
        inputs = app.pull_inputs()
        assert inputs.object_dir == str(state.objects.directory)
        proto, _ = app.pull_message(1.0)
        assert proto is not None
        received = app.decode(proto)
        (values,) = received.content["a"].to_numpy_ndarrays()
        assert values.tolist() == [1.0] * 50_000
        doubled = ArrayRecord([values * 2])
        app.push_reply(Message(RecordDict({"a": doubled}), reply_to=received), app.context(inputs))
        assert streams == []  # neither way over PullObjects/PushObjects
        assert not state.inflight  # the reply was accepted, its objects found in the files
        (item,) = list(io.outbox._items)
        (reply_object,) = item.objects.values()  # type: ignore[union-attr]
        assert b"".join(reply_object.chunks(1 << 20)) == bytes(doubled["0"].data)
