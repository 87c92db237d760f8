"""`AsyncServer`: coroutine and plain handlers side by side, and a stop that leaves nothing."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import pytest

from corolla.common.aioserver import AsyncServer
from corolla.common.grpc import bind, server_options

pytestmark = pytest.mark.timeout(30)


def test_plain_and_coroutine_handlers_are_served_and_stop_ends_the_loop() -> None:
    release = threading.Event()

    def plain(request: bytes, context: Any) -> bytes:
        return b"plain " + threading.current_thread().name.encode()

    async def waits(request: bytes, context: Any) -> bytes:
        while not release.is_set():  # waits on the loop, holding no thread
            await asyncio.sleep(0.01)
        return b"waited"

    handlers = {
        "Plain": grpc.unary_unary_rpc_method_handler(plain),
        "Waits": grpc.unary_unary_rpc_method_handler(waits),
    }
    server = AsyncServer(max_workers=2, options=server_options(), name="test-aio")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", handlers),))
    port = bind(server, "127.0.0.1:0", None)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        waiting = [channel.unary_unary("/t.S/Waits").future(b"") for _ in range(20)]
        # Twenty waiting calls, two threads: a plain call is still served at once.
        assert channel.unary_unary("/t.S/Plain")(b"", timeout=5).startswith(b"plain test-aio")
        release.set()
        assert [call.result(timeout=5) for call in waiting] == [b"waited"] * 20
    assert server.stop(1).wait(10)
    assert not server.loop.is_running()
    assert not [t for t in threading.enumerate() if t.name.startswith("test-aio")]
    assert server.stop(1).wait(1)  # twice is fine


def test_a_plain_streaming_handler_that_refuses_before_streaming_is_answered() -> None:
    from corolla.common.guard import _generator

    def refuses(request: bytes, context: Any) -> Any:
        context.abort(grpc.StatusCode.NOT_FOUND, "no such object")

    def streams(request: bytes, context: Any) -> Any:
        return iter([b"a", b"b"])  # an iterator, not a generator

    handlers = {
        "Refuses": grpc.unary_stream_rpc_method_handler(_generator(refuses)),
        "Streams": grpc.unary_stream_rpc_method_handler(_generator(streams)),
    }
    server = AsyncServer(max_workers=2, options=server_options(), name="test-aio")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", handlers),))
    port = bind(server, "127.0.0.1:0", None)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as refused:
                list(channel.unary_stream("/t.S/Refuses")(b"", timeout=5))
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
            assert list(channel.unary_stream("/t.S/Streams")(b"", timeout=5)) == [b"a", b"b"]
    finally:
        assert server.stop(1).wait(10)
