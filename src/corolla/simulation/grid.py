"""`SimulationGrid`: a `Grid` over virtual SuperNodes whose ClientApps run in a worker pool."""

from __future__ import annotations

import dataclasses
import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corolla.clientapp import ClientApp
from corolla.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from corolla.common.objects import Buffer
from corolla.common.protocol import SERVER_NODE_ID, TTL_EXPIRED_REASON
from corolla.proto.v1 import message_pb2 as mpb
from corolla.records import Context, Error, ErrorCode, Message, Metadata, RecordDict, UserConfig
from corolla.records.message import restore_message
from corolla.records.wire import decode_messages, encode_messages
from corolla.serverapp._run import local_run
from corolla.serverapp.grid import RunBoundGrid, check_outgoing
from corolla.simulation.backend import (
    BackendConfig,
    ClientAppSource,
    Task,
    TaskResult,
    start_backend,
)
from corolla.simulation.contexts import ContextStore, context_from_bytes, context_to_bytes
from corolla.simulation.inprocess import Checkpoint, records_roundtrip

_WAIT_SLICE = 0.25  # longest wait in `receive` before looking at TTLs and the backend again


@dataclass
class _Queued:
    """A pushed message, encoded, waiting for its node to be free."""

    message_id: str
    data: bytes
    objects: dict[str, Buffer]


_Done = Message | TaskResult  # an error reply made here, or a worker's encoded reply


class SimulationGrid(RunBoundGrid):
    """A `Grid` over ``num_supernodes`` virtual SuperNodes on this machine.

    Node ids are ``1..num_supernodes`` (stable, so a seeded strategy samples the same nodes as
    on `InProcessGrid`); node ``i`` has ``node_config`` ``{"partition-id": i - 1,
    "num-partitions": num_supernodes}`` updated with ``node_configs[i]``. Each node's
    `Context` keeps its ``state`` across messages and rounds (stored after every message, as
    encoded bytes in a `ContextStore` on disk). A node handles one message at a time, in push
    order, like a SuperNode's warm ClientApp process; different nodes run in parallel on the
    worker pool (`WorkerPool`; its size from ``backend_config``, see `BackendConfig.parse`).

    Messages, replies and checkpoints go through the wire encoding. `push_messages` returns at
    once; `pull_messages` returns the replies done so far; `receive` yields them as they come.
    A message whose TTL runs out (by ``clock``, wall-clock seconds) before its reply gets a
    ``TTL_EXPIRED`` error reply, as from a SuperLink; a late reply is then dropped (the node's
    context still keeps what the call did). Use as a context manager, or call `close`.
    `run` describes a running run with ``run_config`` as its overrides and no FAB, until
    `set_run` gives a fuller description of the same run.
    """

    def __init__(
        self,
        client_app: ClientApp | ClientAppSource,
        num_supernodes: int,
        *,
        backend_config: Mapping[str, Any] | None = None,
        run_id: int = 1,
        run_config: UserConfig | None = None,
        node_configs: Mapping[int, UserConfig] | None = None,
        checkpoint: Checkpoint | None = None,
        clock: Callable[[], float] = time.time,
        context_dir: Path | None = None,
    ) -> None:
        if num_supernodes < 1:
            raise InvalidArgument("num_supernodes must be at least 1")
        source = (
            client_app
            if isinstance(client_app, ClientAppSource)
            else ClientAppSource.from_app(client_app)
        )
        resources = BackendConfig.parse(backend_config, max_workers=num_supernodes)
        self._run_id = run_id
        self._run = local_run(run_id, run_config or {})
        self._num = num_supernodes
        self._run_config = dict(run_config or {})
        self._node_configs = {int(k): dict(v) for k, v in (node_configs or {}).items()}
        self._clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: dict[str, Metadata] = {}  # pushed, not answered (nor expired)
        self._expiry: list[tuple[float, str]] = []  # heap of (expires at, message id)
        self._backlog: dict[int, deque[_Queued]] = {}  # node -> messages waiting for it
        self._running: dict[int, str] = {}  # node -> message id in the pool
        self._tasks: dict[str, int] = {}  # message id in the pool -> node
        self._done: dict[str, _Done] = {}  # message id -> reply, until pulled
        self._closed = False
        self._checkpoint: Checkpoint | None = None
        if checkpoint is not None:
            self._checkpoint = (checkpoint[0], records_roundtrip(checkpoint[1]))
        self._saved_here = False  # a checkpoint saved by this grid is not resumed from
        self._store = ContextStore(context_dir)
        try:
            self._pool = start_backend(source, self._on_result, resources)
        except BaseException:
            self._store.close()
            raise

    # -- Grid ----------------------------------------------------------------------------------
    def get_node_ids(self) -> list[int]:
        return list(range(1, self._num + 1))

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        batch = check_outgoing(messages)
        for message in batch:
            if not 1 <= message.metadata.dst_node_id <= self._num:
                raise InvalidArgument(f"unknown destination node {message.metadata.dst_node_id}")
        encoded = []
        for message in batch:
            message.metadata.run_id = self._run_id
            message.metadata.src_node_id = SERVER_NODE_ID
            protos, objects = encode_messages([message])
            encoded.append((dataclasses.replace(message.metadata), protos[0], objects))
        with self._lock:
            self._check_open()
            for metadata, proto, objects in encoded:
                self._accept(
                    metadata, _Queued(metadata.message_id, proto.SerializeToString(), objects)
                )
        return [metadata.message_id for metadata, _, _ in encoded]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return self._take(set(message_ids))

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        return super().send_and_receive(messages, timeout=timeout)

    def receive(
        self, message_ids: Iterable[str], timeout: float | None = None
    ) -> Iterator[Message]:
        """Yield replies as the workers finish them, until all came or ``timeout`` passed."""
        pending = set(message_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            for reply in self._take(pending):
                pending.discard(reply.metadata.reply_to_message_id)
                yield reply
            if not pending:
                return
            slice_ = _WAIT_SLICE
            if deadline is not None:
                slice_ = min(slice_, deadline - time.monotonic())
                if slice_ <= 0:
                    return
            with self._changed:
                if self._done.keys().isdisjoint(pending):
                    self._changed.wait(slice_)

    def save_checkpoint(self, server_round: int, checkpoint: RecordDict) -> None:
        self._checkpoint = (server_round, records_roundtrip(checkpoint))
        self._saved_here = True

    def load_checkpoint(self) -> Checkpoint | None:
        return None if self._saved_here else self._checkpoint

    # -- simulation extras ---------------------------------------------------------------------
    @property
    def saved_checkpoint(self) -> Checkpoint | None:
        """The last checkpoint saved (for tests: hand it to a new grid to resume)."""
        return self._checkpoint

    @property
    def num_workers(self) -> int:
        return self._pool.num_workers

    def worker_pids(self) -> list[int]:
        """Process ids of the backend's workers (for diagnostics and tests)."""
        return self._pool.pids()

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Wait until the workers have loaded the ClientApp (work queues until then anyway)."""
        return self._pool.wait_ready(timeout)

    def node_config(self, node_id: int) -> UserConfig:
        return {
            "partition-id": node_id - 1,
            "num-partitions": self._num,
            **self._node_configs.get(node_id, {}),
        }

    def context(self, node_id: int) -> Context:
        """The context node ``node_id`` keeps between messages (decoded from the store)."""
        if not 1 <= node_id <= self._num:
            raise InvalidArgument(f"unknown node {node_id}")
        return context_from_bytes(self._context_bytes(node_id))

    def close(self) -> None:
        """End the worker pool (every worker reaped) and remove the context store."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
        self._pool.close()
        self._store.close()

    def __enter__(self) -> SimulationGrid:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition("the simulation grid is closed")
        if self._pool.failure is not None:
            raise Unavailable(f"the simulation backend failed: {self._pool.failure!r}")

    def _context_bytes(self, node_id: int) -> bytes:
        stored = self._store.get(node_id)
        if stored is not None:
            return stored
        context = Context(
            run_id=self._run_id,
            node_id=node_id,
            node_config=self.node_config(node_id),
            run_config=dict(self._run_config),
        )
        return context_to_bytes(context)

    def _accept(self, metadata: Metadata, queued: _Queued) -> None:
        """Take a pushed message (lock held): to the pool if its node is free, else queued."""
        if metadata.message_id in self._pending or metadata.message_id in self._done:
            return  # pushed twice: once is enough
        self._pending[metadata.message_id] = metadata
        heapq.heappush(self._expiry, (metadata.created_at + metadata.ttl, metadata.message_id))
        if len(self._expiry) > 2 * len(self._pending) + 1024:  # drop answered ones: stay small
            self._expiry = [(md.created_at + md.ttl, mid) for mid, md in self._pending.items()]
            heapq.heapify(self._expiry)
        node = metadata.dst_node_id
        if node in self._running:
            self._backlog.setdefault(node, deque()).append(queued)
        else:
            self._start(node, queued)

    def _start(self, node: int, queued: _Queued) -> None:
        self._running[node] = queued.message_id
        self._tasks[queued.message_id] = node
        task = Task(queued.message_id, queued.data, self._context_bytes(node), queued.objects)
        self._pool.submit(task)

    def _next(self, node: int) -> None:
        """The node is free (lock held): start its next waiting message, if any."""
        self._running.pop(node, None)
        backlog = self._backlog.get(node)
        if backlog:
            self._start(node, backlog.popleft())
        if not backlog:
            self._backlog.pop(node, None)

    def _on_result(self, result: TaskResult) -> None:
        """A worker finished a task (called on the pool's dispatcher thread)."""
        with self._lock:
            if self._closed:
                return
            node = self._tasks.pop(result.task_id)
            if result.context:
                self._store.put(node, result.context)
            metadata = self._pending.pop(result.task_id, None)
            if metadata is not None:  # else its TTL ran out: the reply comes too late
                if result.error is not None:
                    self._done[result.task_id] = _error_reply(metadata, result.error)
                else:
                    self._done[result.task_id] = result
                self._changed.notify_all()
            self._next(node)

    def _take(self, wanted: Collection[str]) -> list[Message]:
        """Remove and decode the replies of ``wanted`` that are done (TTLs checked first)."""
        with self._lock:
            self._check_open()
            self._expire(self._clock())
            if len(self._done) < len(wanted):
                ids = [mid for mid in self._done if mid in wanted]
            else:
                ids = [mid for mid in wanted if mid in self._done]
            ready = [self._done.pop(mid) for mid in ids]
        return [_decoded(item) for item in ready]

    def _expire(self, now: float) -> None:
        """Answer every pending message whose TTL ran out with TTL_EXPIRED (lock held)."""
        while self._expiry and self._expiry[0][0] < now:
            _, message_id = heapq.heappop(self._expiry)
            metadata = self._pending.pop(message_id, None)
            if metadata is None:
                continue  # answered in time
            error = Error(ErrorCode.TTL_EXPIRED, TTL_EXPIRED_REASON)
            self._done[message_id] = _error_reply(metadata, error)
            node = metadata.dst_node_id
            backlog = self._backlog.get(node)
            waiting = [q for q in backlog or () if q.message_id == message_id]
            if backlog is not None and waiting:
                backlog.remove(waiting[0])
            elif self._running.get(node) == message_id and self._pool.cancel(message_id):
                del self._tasks[message_id]
                self._next(node)  # never started; a started one finishes and keeps its context


def _error_reply(metadata: Metadata, error: Error) -> Message:
    """An error reply on behalf of the node ``metadata`` was sent to."""
    return Message(error=error, reply_to=restore_message(metadata, content=RecordDict()))


def _decoded(item: _Done) -> Message:
    if isinstance(item, Message):
        return item
    objects = item.objects
    (reply,) = decode_messages(
        [mpb.Message.FromString(item.reply)], lambda ids: {i: objects[i] for i in ids}
    )
    return reply
