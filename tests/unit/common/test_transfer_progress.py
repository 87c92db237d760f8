"""Progress of long object transfers: a line every few seconds, one at the end, none when fast."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from corolla.common.objects import ObjectAssembler, encode_chunks, object_id_of
from corolla.common.transfer import ObjectClient, TransferLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_long_transfer_logs_every_interval_and_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    progress = TransferLog("fetching 2 objects", logging.getLogger("t"), interval=5, clock=clock)
    with caplog.at_level(logging.INFO, logger="t"):
        for done in range(1, 10):
            clock.now += 1.5
            progress(done * 100_000_000, 1_000_000_000, False)
        clock.now += 1.0
        progress(1_000_000_000, 1_000_000_000, True)
    assert [r.getMessage() for r in caplog.records] == [
        "fetching 2 objects: 400 MB of 1000 MB (40 %)",
        "fetching 2 objects: 800 MB of 1000 MB (80 %)",
        "fetching 2 objects: 1000 MB in 14.5 s",
    ]


def test_a_short_transfer_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    progress = TransferLog("pushing", logging.getLogger("t"), interval=5, clock=clock)
    with caplog.at_level(logging.INFO, logger="t"):
        clock.now += 4.9
        progress(10, 10, True)
    assert caplog.records == []


def test_push_and_pull_report_every_frame_and_the_end() -> None:
    data = bytes(range(256)) * 20_000  # 5 MB: five 1 MiB frames
    object_id = object_id_of(data)

    def push(frames: Iterator[bytes], context: object) -> bytes:
        with ObjectAssembler() as assembler:
            for frame in frames:
                assembler.feed(frame)
        return b""

    def pull(request: bytes, context: object) -> Iterator[bytes]:
        yield from encode_chunks(object_id, data)

    def missing(request: bytes, context: object) -> bytes:
        from corolla.proto.v1 import objects_pb2 as opb

        ids = opb.MissingObjectsRequest.FromString(request).object_ids
        return opb.MissingObjectsResponse(object_ids=list(ids)).SerializeToString()

    server = grpc.server(futures.ThreadPoolExecutor(4))
    handlers = {
        "PushObjects": grpc.stream_unary_rpc_method_handler(push),
        "PullObjects": grpc.unary_stream_rpc_method_handler(pull),
        "MissingObjects": grpc.unary_unary_rpc_method_handler(missing),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        client = ObjectClient(channel, "t.S", [])
        pushed: list[tuple[int, int, bool]] = []
        client.push({object_id: data}, ids={}, timeout=10, progress=lambda *a: pushed.append(a))
        pulled: list[tuple[int, int, bool]] = []
        out = client.pull_into(
            [object_id], lambda *_: Sink(), ids={}, timeout=10, progress=lambda *a: pulled.append(a)
        )
        assert bytes(out[object_id]) == data
    finally:
        channel.close()
        server.stop(0).wait(5)
    for report in (pushed, pulled):
        assert len(report) == 6  # five frames, then the end
        assert report[-1] == (len(data), len(data), True)
        assert [done for done, _, _ in report] == sorted(done for done, _, _ in report)
        assert not any(finished for _, _, finished in report[:-1])


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: memoryview) -> None:
        self.data += data

    def commit(self) -> bytearray:
        return self.data

    def discard(self) -> None:
        self.data = bytearray()
