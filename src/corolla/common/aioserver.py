"""A `grpc.aio` server on an event loop of its own, for an API whose calls mostly wait.

A thread-per-call server spends a thread on every waiting call (a SuperNode's long poll), so
its pool bounds how many nodes it can serve. Here coroutine handlers (``async def``) wait on
the loop for nothing but memory, while plain handlers run on a thread pool as they do on the
synchronous servers (`grpc.aio`'s ``migration_thread_pool``): servicers keep their blocking
code, and only what waits needs to be a coroutine. The loop runs in its own thread; the rest of
the daemon uses the server through the same calls as a `grpc.Server` (`bind`, ``start``,
``stop(grace)``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import grpc

_T = TypeVar("_T")

SETUP_TIMEOUT = 30.0  # seconds for the loop to make, start or stop the server


class AsyncServer:
    """``max_workers`` threads run the plain handlers; coroutine handlers run on `loop`."""

    def __init__(
        self,
        *,
        max_workers: int,
        options: Sequence[tuple[str, Any]],
        maximum_concurrent_rpcs: int | None = None,
        name: str = "grpc-aio",
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name=name, daemon=True)
        self._thread.start()
        self._workers: list[threading.Thread] = []  # the pool's, joined by `stop`
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers, thread_name_prefix=name, initializer=self._worker_started
        )

        async def make() -> grpc.aio.Server:
            return grpc.aio.server(
                migration_thread_pool=self._pool,
                options=list(options),
                maximum_concurrent_rpcs=maximum_concurrent_rpcs,
            )

        self._server = self._on_loop(make())
        self._stopped = threading.Event()

    def _worker_started(self) -> None:
        self._workers.append(threading.current_thread())

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _on_loop(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(SETUP_TIMEOUT)

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, credentials)

    def start(self) -> None:
        self._on_loop(self._server.start())

    def stop(self, grace: float | None) -> threading.Event:
        """Stop taking calls; calls in flight get ``grace`` seconds. The returned event is set
        once the server, its threads and its loop have ended."""
        if self._stopped.is_set() or not self.loop.is_running():
            self._stopped.set()
            return self._stopped

        def finish(_: object) -> None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            with contextlib.suppress(Exception):  # the loop has gone: nothing is left on it
                self._on_loop(_settle())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(SETUP_TIMEOUT)
            self.loop.close()
            deadline = time.monotonic() + SETUP_TIMEOUT
            for worker in list(self._workers):  # each ends once its handler has returned
                worker.join(max(0.0, deadline - time.monotonic()))
            self._stopped.set()

        future = asyncio.run_coroutine_threadsafe(self._server.stop(grace), self.loop)
        future.add_done_callback(lambda done: threading.Thread(target=finish, args=(done,)).start())
        return self._stopped


async def _settle() -> None:
    """Cancel what is still running on the loop (handlers the server let go of) and let it end."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=SETUP_TIMEOUT)
