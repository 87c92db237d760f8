"""Negotiated compression through `ObjectClient` and `send_objects` over real gRPC: a sender
compresses only when its own setting says so and the receiver announced it decodes zstd."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from object_wire import WireRecorder, encodings, pull_frames

from corolla.common.compression import ACCEPTED, NONE, ZSTD, negotiated
from corolla.common.objects import object_id_of
from corolla.common.transfer import ObjectClient, receive_objects_into, send_objects
from corolla.proto.v1 import objects_pb2 as opb

pytestmark = pytest.mark.timeout(30)
SERVICE = "t.Objects"
MiB = 1 << 20
SPARSE = bytes(MiB) + b"\x01" * 1000 + bytes(2 * MiB)  # compresses to almost nothing
SPARSE_ID = object_id_of(SPARSE)


@dataclass
class FakeServer:
    """Object RPCs over a dict, with the receiving and sending halves of `common/transfer.py`:
    ``accept`` is what its MissingObjects reply announces, ``compression`` its own setting."""

    accept: list[str]
    compression: str
    objects: dict[str, bytes] = field(default_factory=dict)
    pushed: list[bytes] = field(default_factory=list)
    pull_accepts: list[list[str]] = field(default_factory=list)

    def missing(self, request: bytes, context: object) -> bytes:
        ids = opb.MissingObjectsRequest.FromString(request).object_ids
        lacking = [oid for oid in ids if oid not in self.objects]
        reply = opb.MissingObjectsResponse(object_ids=lacking, accept_encodings=self.accept)
        return reply.SerializeToString()

    def push(self, frames: Iterator[bytes], context: object) -> bytes:
        def kept() -> Iterator[bytes]:
            for frame in frames:
                self.pushed.append(frame)
                yield frame

        response = receive_objects_into(kept(), lambda oid, size: Sink(self.objects, oid))
        return response.SerializeToString()

    def pull(self, raw: bytes, context: object) -> Iterator[bytes]:
        request = opb.PullObjectsRequest.FromString(raw)
        self.pull_accepts.append(list(request.accept_encodings))
        encoding = negotiated(self.compression, request.accept_encodings)
        return send_objects(
            request.object_ids,
            lambda oid: len(self.objects[oid]),
            lambda oid, n: iter([self.objects[oid][i : i + n] for i in range(0, len(SPARSE), n)]),
            encoding=encoding,
        )


class Sink:
    def __init__(self, into: dict[str, bytes], object_id: str) -> None:
        self.into, self.object_id, self.data = into, object_id, bytearray()

    def write(self, data: memoryview) -> None:
        self.data += data

    def commit(self) -> None:
        self.into[self.object_id] = bytes(self.data)

    def discard(self) -> None:
        self.data = bytearray()


@dataclass
class Connected:
    server: FakeServer
    recorder: WireRecorder
    channel: grpc.Channel

    def client(self, compression: str = NONE) -> ObjectClient:
        return ObjectClient(self.channel, SERVICE, [], compression=compression)


Connect = Callable[..., Connected]  # (accept, compression=NONE) -> a server and a channel to it


@pytest.fixture
def connect() -> Iterator[Connect]:
    started: list[tuple[grpc.Server, grpc.Channel]] = []

    def start(accept: list[str], compression: str = NONE) -> Connected:
        fake = FakeServer(accept, compression)
        server = grpc.server(futures.ThreadPoolExecutor(4))
        handlers = {
            "MissingObjects": grpc.unary_unary_rpc_method_handler(fake.missing),
            "PushObjects": grpc.stream_unary_rpc_method_handler(fake.push),
            "PullObjects": grpc.unary_stream_rpc_method_handler(fake.pull),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        recorder = WireRecorder()
        channel = grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{port}"), recorder)
        started.append((server, channel))
        return Connected(fake, recorder, channel)

    yield start
    for server, channel in started:
        channel.close()
        server.stop(0).wait(5)


@pytest.mark.parametrize(
    ("client_setting", "server_accepts", "expected"),
    [
        pytest.param(ZSTD, [ZSTD], {1}, id="both-on"),
        pytest.param(ZSTD, [], set(), id="server-does-not-accept"),
        pytest.param(NONE, [ZSTD], set(), id="client-setting-off"),
    ],
)
def test_a_push_is_compressed_only_when_both_sides_say_so(
    connect: Connect, client_setting: str, server_accepts: list[str], expected: set[int]
) -> None:
    link = connect(server_accepts)
    pushed = link.client(client_setting).push({SPARSE_ID: SPARSE}, ids={}, timeout=10)
    assert pushed == 1
    assert link.server.objects == {SPARSE_ID: SPARSE}  # hash checked by the receiving half
    assert encodings(link.server.pushed) == (expected or {0})
    wire = sum(map(len, link.server.pushed))
    assert (wire < len(SPARSE) // 100) if expected else (wire > len(SPARSE))
    assert link.recorder.pushed == link.server.pushed  # the recorder sees what is sent


@pytest.mark.parametrize(
    ("server_setting", "expected"), [pytest.param(ZSTD, {1}), pytest.param(NONE, {0})]
)
def test_a_pull_announces_zstd_and_is_compressed_only_by_a_server_set_to(
    connect: Connect, server_setting: str, expected: set[int]
) -> None:
    link = connect([ZSTD], server_setting)
    link.server.objects[SPARSE_ID] = SPARSE
    pulled = link.client().pull([SPARSE_ID], ids={}, timeout=10)
    assert bytes(pulled[SPARSE_ID]) == SPARSE
    assert link.server.pull_accepts == [list(ACCEPTED)]
    assert encodings(link.recorder.pulled) == expected


def test_a_server_set_to_zstd_sends_raw_to_a_puller_that_does_not_accept_it(
    connect: Connect,
) -> None:
    link = connect([ZSTD], ZSTD)
    link.server.objects[SPARSE_ID] = SPARSE
    old = pull_frames(link.channel, SERVICE, opb.PullObjectsRequest(object_ids=[SPARSE_ID]))
    assert encodings(old) == {0}
    assert sum(len(frame) for frame in old) > len(SPARSE)


def test_progress_of_a_compressed_push_counts_the_objects_bytes(connect: Connect) -> None:
    link = connect([ZSTD])
    reports: list[tuple[int, int, bool]] = []
    link.client(ZSTD).push(
        {SPARSE_ID: SPARSE}, ids={}, timeout=10, progress=lambda *a: reports.append(a)
    )
    assert encodings(link.server.pushed) == {1}
    total = len(SPARSE)
    sent = [MiB, 2 * MiB, 3 * MiB, total]  # one report per chunk, by the bytes it carried
    assert reports == [(done, total, False) for done in sent] + [(total, total, True)]
