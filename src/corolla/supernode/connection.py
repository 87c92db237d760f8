"""The SuperNode's one outbound connection: typed calls on the SuperLink's Fleet API.

Calls take and return the node's records (`domain.py`); protobuf stays in here. Every call has
a deadline; failures come out as `CorollaError` (translated once, here). Calls in flight can be
cancelled all at once (`cancel_pending`) so that a stopping node never waits for a long poll to
run out.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from corolla.common.compression import NONE
from corolla.common.errors import CorollaError, DeadlineExceeded, Unavailable
from corolla.common.grpc import create_channel, error_from_rpc, error_from_status
from corolla.common.nodekeys import PrivateKey, SigningInterceptor
from corolla.common.objects import Buffer, ObjectSource, SinkFactory
from corolla.common.protocol import MAX_ACKS
from corolla.common.tls import ClientTls
from corolla.common.transfer import NODE_ID_KEY, RUN_ID_KEY, ObjectClient, Progress
from corolla.proto.v1 import fleet_pb2 as fpb
from corolla.proto.v1 import fleet_pb2_grpc
from corolla.proto.v1 import run_pb2 as rpb
from corolla.supernode.convert import (
    envelope_from_proto,
    envelope_to_proto,
    fab_from_proto,
    run_from_proto,
)
from corolla.supernode.domain import Envelope, Fab, RunInfo

FLEET_SERVICE = "corolla.proto.v1.Fleet"
RPC_TIMEOUT = 30.0
FAB_TIMEOUT = 120.0
OBJECT_TIMEOUT = 600.0
FINAL_HEARTBEAT_TIMEOUT = 2.0  # a stopping node does not wait long for its last heartbeat
POLL_MARGIN = 5.0  # a long poll's deadline is its wait plus this
STREAM_SECONDS = 3600.0  # a stream's deadline: the node opens the next one then
SEND_CHECK = 1.0  # seconds between a stream's checks, while it has nothing to send, that it is open
ACK_DELAY = 0.5  # seconds an acknowledgement waits to ride up with the reply (which acknowledges)

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class Stopped(CorollaError):
    """The call was cancelled because the SuperNode is stopping."""


class StreamEnded(Unavailable):
    """The node's stream ended before this was answered (send it another way)."""


class FleetConnection:
    def __init__(
        self,
        address: str,
        *,
        insecure: bool,
        root_certificates: bytes | None = None,
        client_tls: ClientTls | None = None,
        auth_key: PrivateKey | None = None,
        compression: str = NONE,
    ) -> None:
        self.address = address
        self._compression = compression  # of pushed objects, if the SuperLink accepts it
        channel = create_channel(
            address, insecure=insecure, root_certificates=root_certificates, client_tls=client_tls
        )
        self._raw_channel = channel
        if auth_key is not None:  # every call signed (SuperNode authentication)
            channel = grpc.intercept_channel(channel, SigningInterceptor(auth_key, time.time))
        self._channel = channel
        self._stub = fleet_pb2_grpc.FleetStub(self._channel)
        self._lock = threading.Lock()
        self._pending: set[grpc.Future[Any]] = set()
        self._cancelled = False

    def close(self) -> None:
        self.cancel_pending()
        self._raw_channel.close()

    def cancel_pending(self) -> None:
        """Cancel the waits in flight (long polls, heartbeats, registration) and refuse new
        ones; pushes still go through so that a stopping node can hand over what it has."""
        with self._lock:
            self._cancelled = True
            pending = list(self._pending)
        for future in pending:
            future.cancel()

    def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        timeout: float,
        *,
        cancellable: bool = True,
    ) -> Resp:
        future: grpc.Future[Resp] = method.future(request, timeout=timeout)
        if cancellable:
            with self._lock:
                if self._cancelled:
                    future.cancel()
                self._pending.add(future)
        try:
            return future.result()  # bounded by the call's deadline
        except grpc.FutureCancelledError as exc:
            raise Stopped("call cancelled: the SuperNode is stopping") from exc
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and self._cancelled:
                raise Stopped("call cancelled: the SuperNode is stopping") from exc
            raise error_from_rpc(exc, self.address) from exc
        finally:
            with self._lock:
                self._pending.discard(future)

    # -- node -----------------------------------------------------------------------------------

    def create_node(
        self, heartbeat_interval: float, requested_node_id: int = 0
    ) -> tuple[int, float]:
        request = fpb.CreateNodeRequest(
            heartbeat_interval=heartbeat_interval, requested_node_id=requested_node_id
        )
        response = self._call(self._stub.CreateNode, request, RPC_TIMEOUT)
        return response.node_id, response.heartbeat_interval or heartbeat_interval

    def delete_node(self, node_id: int, timeout: float = 2.0) -> None:
        request = fpb.DeleteNodeRequest(node_id=node_id)
        self._call(self._stub.DeleteNode, request, timeout, cancellable=False)

    def heartbeat(
        self, node_id: int, interval: float, active_run_ids: list[int], *, final: bool = False
    ) -> list[int]:
        """Returns the ids among ``active_run_ids`` whose runs ended. A ``final`` heartbeat
        (a stopping node's last, so that what it still sends is accepted) is not cancelled."""
        request = fpb.HeartbeatRequest(
            node_id=node_id, heartbeat_interval=interval, active_run_ids=active_run_ids
        )
        timeout = FINAL_HEARTBEAT_TIMEOUT if final else RPC_TIMEOUT
        response = self._call(self._stub.Heartbeat, request, timeout, cancellable=not final)
        return list(response.finished_run_ids)

    # -- messages -------------------------------------------------------------------------------

    def pull_messages(
        self,
        node_id: int,
        wait: float,
        max_messages: int,
        active_run_ids: list[int],
        acks: Sequence[str] = (),
    ) -> tuple[list[Envelope], list[int]]:
        """Messages for the node, and the ids among ``active_run_ids`` whose runs ended;
        ``acks``: instructions the node received from earlier pulls (`Deliveries`)."""
        request = fpb.FleetPullMessagesRequest(
            node_id=node_id,
            wait_seconds=wait,
            max_messages=max_messages,
            active_run_ids=active_run_ids,
            ack_message_ids=acks,
        )
        response = self._call(self._stub.PullMessages, request, wait + POLL_MARGIN)
        messages = [envelope_from_proto(proto) for proto in response.messages]
        return messages, list(response.finished_run_ids)

    def connect(self, node_id: int, interval: float, run_ids: list[int]) -> NodeStream:
        """Open the node's stream (`Fleet.Connect`), its first heartbeat sent."""
        stream = NodeStream(self, node_id, ACK_DELAY)
        # A grpc.Future as well as the iterator its stub's types name (a rendezvous).
        call: Any = self._stub.Connect(
            stream.requests(),
            metadata=((NODE_ID_KEY, str(node_id)),),
            timeout=STREAM_SECONDS,
        )
        stream.call = call
        with self._lock:
            if self._cancelled:
                call.cancel()
            self._pending.add(call)
        call.add_done_callback(lambda _: self._forget(call))
        stream.send_beat(interval, run_ids)
        return stream

    def _forget(self, call: Any) -> None:
        with self._lock:
            self._pending.discard(call)

    def stream_error(self, exc: grpc.RpcError) -> CorollaError:
        if exc.code() == grpc.StatusCode.CANCELLED and self._cancelled:
            return Stopped("stream cancelled: the SuperNode is stopping")
        return error_from_rpc(exc, self.address)

    def push_messages(self, node_id: int, messages: list[Envelope]) -> None:
        protos = [envelope_to_proto(message) for message in messages]
        request = fpb.FleetPushMessagesRequest(node_id=node_id, messages=protos)
        self._call(self._stub.PushMessages, request, RPC_TIMEOUT, cancellable=False)

    def push_logs(self, node_id: int, run_id: int, lines: list[str]) -> None:
        request = fpb.FleetPushLogsRequest(node_id=node_id, run_id=run_id, lines=lines)
        self._call(self._stub.PushLogs, request, RPC_TIMEOUT, cancellable=False)

    # -- runs, FABs, objects --------------------------------------------------------------------

    def get_run(self, node_id: int, run_id: int) -> RunInfo:
        request = rpb.GetRunRequest(node_id=node_id, run_id=run_id)
        return run_from_proto(self._call(self._stub.GetRun, request, RPC_TIMEOUT).run)

    def get_fab(self, node_id: int, run_id: int, fab_hash: str) -> Fab:
        request = rpb.GetFabRequest(node_id=node_id, run_id=run_id, fab_hash=fab_hash)
        return fab_from_proto(self._call(self._stub.GetFab, request, FAB_TIMEOUT).fab)

    def _objects(self, node_id: int, run_id: int) -> tuple[ObjectClient, dict[str, Any]]:
        metadata = [(NODE_ID_KEY, str(node_id)), (RUN_ID_KEY, str(run_id))]
        client = ObjectClient(
            self._channel, FLEET_SERVICE, metadata=metadata, compression=self._compression
        )
        return client, {"node_id": node_id, "run_id": run_id}

    def pull_objects(
        self,
        node_id: int,
        run_id: int,
        object_ids: list[str],
        open_sink: SinkFactory[object],
        progress: Progress | None = None,
    ) -> None:
        """Fetch objects, each streamed into the sink ``open_sink(object_id, size)`` gives."""
        client, ids = self._objects(node_id, run_id)
        try:
            # the SuperLink checked them on receipt (trusted hops: common/transfer.py)
            client.pull_into(
                object_ids,
                open_sink,
                ids=ids,
                timeout=OBJECT_TIMEOUT,
                verify=False,
                progress=progress,
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from exc

    def push_objects(
        self,
        node_id: int,
        run_id: int,
        objects: Mapping[str, Buffer | ObjectSource],
        progress: Progress | None = None,
    ) -> int:
        """Send those of ``objects`` the SuperLink lacks; returns how many were sent."""
        client, ids = self._objects(node_id, run_id)
        try:
            return client.push(objects, ids=ids, timeout=OBJECT_TIMEOUT, progress=progress)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from exc


@dataclass
class Down:
    """What came down a stream at once: instructions, runs of the node that ended."""

    messages: list[Envelope]
    finished_run_ids: list[int]


_TICK = fpb.NodeUp()  # not sent: tells the stream's sender to look at its acknowledgements


def _ack_messages(message_ids: list[str]) -> Iterator[fpb.NodeUp]:
    for start in range(0, len(message_ids), MAX_ACKS):
        yield fpb.NodeUp(ack_message_ids=message_ids[start : start + MAX_ACKS])


@dataclass
class _Beat:
    answered: threading.Event = field(default_factory=threading.Event)
    finished: list[int] = field(default_factory=list)
    error: CorollaError | None = None


class NodeStream:
    """The node's open `Fleet.Connect` stream. One thread iterates it (`Down`s, until it ends:
    `CorollaError`, or nothing at its deadline); any thread may send a heartbeat (`beat`) or
    replies (`push`), each answered on the stream, or acknowledge instructions (`ack`).

    An acknowledgement goes up ``ack_delay`` seconds after `ack` at the latest; a reply sent
    before then carries it (the reply acknowledges its instruction anyway, and the other
    waiting ones ride along): a quick answer costs one message up, not two."""

    def __init__(
        self, connection: FleetConnection, node_id: int, ack_delay: float = ACK_DELAY
    ) -> None:
        self.node_id = node_id
        self.call: Any = None  # the gRPC call, set once it is made
        self._connection = connection
        self._ack_delay = ack_delay
        self._up: queue.SimpleQueue[fpb.NodeUp | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._acks: dict[str, float] = {}  # held back: instruction id -> when it is due
        self._beats: dict[int, _Beat] = {}
        self._next_beat = 1
        self._pushes: dict[int, _Beat] = {}  # pushes of replies waiting for their answer
        self._next_push = 1
        self._ended: CorollaError | None = None

    def requests(self) -> Iterator[fpb.NodeUp]:
        """What the stream sends (gRPC's thread consumes it), until the stream ends."""
        while True:
            try:
                up = self._up.get(timeout=self._next_check())
            except queue.Empty:
                up = _TICK
            if up is None:
                return
            if up is _TICK:
                due = self._take_acks(due_only=True)
                if due:
                    yield from _ack_messages(due)
                elif self.call is not None and self.call.done():
                    return
                continue
            if up.replies:  # answered is acknowledged; the others held back ride along
                with self._lock:
                    for reply in up.replies:
                        self._acks.pop(reply.metadata.reply_to_message_id, None)
                riding = self._take_acks(due_only=False)
                up.ack_message_ids.extend(riding[:MAX_ACKS])
                yield up
                yield from _ack_messages(riding[MAX_ACKS:])
                continue
            yield up

    def _next_check(self) -> float:
        """Seconds until the first acknowledgement held back is due (at most SEND_CHECK)."""
        with self._lock:
            first = min(self._acks.values(), default=None)
        if first is None:
            return SEND_CHECK
        return min(SEND_CHECK, max(0.0, first - time.monotonic()))

    def _take_acks(self, *, due_only: bool) -> list[str]:
        now = time.monotonic()
        with self._lock:
            taken = [i for i, due in self._acks.items() if not due_only or due <= now]
            for message_id in taken:
                del self._acks[message_id]
        return taken

    def send_beat(self, interval: float, run_ids: list[int], *, waited: bool = False) -> _Beat:
        """Send a heartbeat; the ends of runs its answer reports come out of the iteration
        unless it is ``waited`` for (`beat`)."""
        waiter = _Beat()
        with self._lock:
            if self._ended is not None:
                raise self._ended
            number, self._next_beat = self._next_beat, self._next_beat + 1
            if waited:
                self._beats[number] = waiter
        self._up.put(fpb.NodeUp(beat=number, heartbeat_interval=interval, active_run_ids=run_ids))
        return waiter

    def beat(self, interval: float, run_ids: list[int], timeout: float = RPC_TIMEOUT) -> list[int]:
        """A heartbeat: the ids among ``run_ids`` whose runs ended. Without an answer within
        ``timeout`` the stream is cut (`Unavailable`: the node opens another)."""
        waiter = self.send_beat(interval, run_ids, waited=True)
        if not waiter.answered.wait(timeout):
            self.cancel()
            raise Unavailable(f"no answer to a heartbeat on the stream within {timeout:g} s")
        if waiter.error is not None:
            raise waiter.error
        return waiter.finished

    def push(self, messages: list[Envelope], timeout: float = RPC_TIMEOUT) -> None:
        """Replies up the stream, as `FleetConnection.push_messages` sends them: returns once
        stored, raises the `CorollaError` of a refusal; `DeadlineExceeded` without an answer
        within ``timeout`` (retry: a reply is stored once however often it comes)."""
        waiter = _Beat()
        with self._lock:
            if self._ended is not None:
                raise StreamEnded(str(self._ended))
            number, self._next_push = self._next_push, self._next_push + 1
            self._pushes[number] = waiter
        protos = [envelope_to_proto(message) for message in messages]
        self._up.put(fpb.NodeUp(push=number, replies=protos))
        if not waiter.answered.wait(timeout):
            with self._lock:
                self._pushes.pop(number, None)
            raise DeadlineExceeded(f"no answer to a push of replies within {timeout:g} s")
        if waiter.error is not None:
            raise waiter.error

    def ack(self, message_ids: list[str]) -> None:
        """Acknowledge these instructions: within ``ack_delay`` seconds, or with a reply."""
        if not message_ids:
            return
        if self._ack_delay <= 0:
            for up in _ack_messages(message_ids):
                self._up.put(up)
            return
        due = time.monotonic() + self._ack_delay
        with self._lock:
            first = not self._acks
            for message_id in message_ids:
                self._acks.setdefault(message_id, due)
        if first:
            self._up.put(_TICK)  # the sender's wait ends at the new due time

    def cancel(self) -> None:
        if self.call is not None:
            self.call.cancel()

    def __iter__(self) -> Iterator[Down]:
        try:
            for down in self.call:
                if down.push:
                    self._pushed(down)
                    continue
                if down.beat and self._answer(down):
                    continue  # its waiter takes the runs that ended
                if down.messages or down.finished_run_ids:
                    messages = [envelope_from_proto(proto) for proto in down.messages]
                    yield Down(messages, list(down.finished_run_ids))
            self._end(Unavailable("the SuperLink closed the stream"))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:  # its time is up: open another
                self._end(Unavailable("the stream reached its deadline"))
                return
            error = self._connection.stream_error(exc)
            self._end(error)
            raise error from exc
        finally:
            self._up.put(None)

    def _answer(self, down: fpb.NodeDown) -> bool:
        """True if a `beat` waits for this answer (it has it now)."""
        with self._lock:
            waiter = self._beats.pop(down.beat, None)
        if waiter is None:
            return False
        waiter.finished = list(down.finished_run_ids)
        waiter.answered.set()
        return True

    def _pushed(self, down: fpb.NodeDown) -> None:
        with self._lock:
            waiter = self._pushes.pop(down.push, None)
        if waiter is None:  # (its pusher gave up waiting)
            return
        status = down.push_status
        if status.code:
            waiter.error = error_from_status(status.code, status.message, self._connection.address)
        waiter.answered.set()

    def _end(self, error: CorollaError) -> None:
        """No more answers: heartbeats and pushes still waiting for one fail with ``error``."""
        with self._lock:
            self._ended = error
            beats, pushes = list(self._beats.values()), list(self._pushes.values())
            self._beats, self._pushes = {}, {}
        for waiter in beats:
            waiter.error = error
            waiter.answered.set()
        for waiter in pushes:  # perhaps stored, perhaps not: the pusher sends them again
            waiter.error = StreamEnded(str(error))
            waiter.answered.set()
