"""Fleet API servicer: SuperNodes register, pull work, push replies, objects and logs.

Every call comes from a node (`POLICY`): `FleetAuth` has established which one before a method
here runs (``context.caller.node_id``; verified when SuperNode authentication is on). Reads are
scoped to that node: the runs it was sent instructions of, their FABs, and the objects those
instructions reference; logs only for runs it serves.

Served by a `corolla.common.aioserver.AsyncServer`: `PullMessages`, the long poll every node
keeps open, is a coroutine that waits on the event loop (`Wakeups`) and holds no thread; the
other calls are plain methods on the server's thread pool, so a heartbeat never queues behind
the waiting polls. A pull consumes nothing (`LinkState.pull_instructions`): a pull cancelled
mid-flight, or whose answer is lost, loses no instruction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence

from corolla.common.batching import GroupCommit, LoopBatch
from corolla.common.compression import NONE, negotiated
from corolla.common.errors import CorollaError, InvalidArgument, NotFound, PermissionDenied
from corolla.common.grpc import WaitSlots, abort_on_error
from corolla.common.guard import Call, Credential, Policy
from corolla.common.protocol import MAX_ACKS, check_heartbeat_interval, check_wait
from corolla.common.transfer import RUN_ID_KEY
from corolla.proto.v1 import fleet_pb2 as fpb
from corolla.proto.v1 import message_pb2 as mpb
from corolla.proto.v1 import objects_pb2 as opb
from corolla.proto.v1 import run_pb2 as rpb
from corolla.superlink.convert import fab_to_proto, run_to_proto
from corolla.superlink.messages import from_stored, to_stored
from corolla.superlink.nodestream import (
    MAX_BATCH_NODES,
    NodeStream,
    Push,
    Pushes,
    Takes,
    take_batch,
)
from corolla.superlink.objects import missing_response, store_pushed, stream_stored
from corolla.superlink.state import LinkState, RunStatus, StoredMessage
from corolla.superlink.wakeups import Wakeups

log = logging.getLogger(__name__)

WRITE_HEARTBEATS_EVERY = 0.5  # seconds between the streams' heartbeats' trips to the database

MAX_BATCH = 64
MAX_WAITING_PULLS = 20_000  # long polls waiting at once (each costs memory, not a thread)

POLICY: Policy = {
    "CreateNode": Credential.NODE,
    "DeleteNode": Credential.NODE,
    "Heartbeat": Credential.NODE,
    "PullMessages": Credential.NODE,
    "PushMessages": Credential.NODE,
    "Connect": Credential.NODE,
    "GetRun": Credential.NODE,
    "GetFab": Credential.NODE,
    "PushLogs": Credential.NODE,
    "PushObjects": Credential.NODE,
    "PullObjects": Credential.NODE,
    "MissingObjects": Credential.NODE,
}


class FleetServicer:
    def __init__(
        self,
        state: LinkState,
        default_heartbeat: float = 5.0,
        *,
        wakeups: Wakeups,
        wait_slots: WaitSlots | None = None,
        compression: str = NONE,
    ) -> None:
        """``wakeups``: of the event loop `PullMessages` runs on, told of the state's changes
        (`LinkState.add_listener`)."""
        self._state = state
        self._default_heartbeat = default_heartbeat
        self._wakeups = wakeups
        self._slots = wait_slots or WaitSlots(MAX_WAITING_PULLS)
        self._compression = compression  # toward pullers that accept it (--compression)
        # What many nodes write at once, batched: the pulls of the streams woken together,
        # the replies pushed on streams or by calls meanwhile.
        self._takes: Takes = LoopBatch(take_batch(state, MAX_BATCH), MAX_BATCH_NODES)
        self._pushes: Pushes = LoopBatch(self._store_pushes, MAX_BATCH_NODES)
        self._replies = GroupCommit(self._store_pushes, MAX_BATCH_NODES)
        self._beats_writer: asyncio.Future[None] | None = None

    def _online(self, context: Call) -> int:
        return self._check_online(context.caller.node_id)

    def _check_online(self, node_id: int) -> int:
        if not self._state.is_online(node_id):
            raise NotFound(f"node {node_id} is not registered (register again)")
        return node_id

    def _served(self, context: Call, run_id: int) -> int:
        node_id = self._online(context)
        if not self._state.node_serves_run(node_id, run_id):
            raise PermissionDenied(f"node {node_id} does not serve run {run_id}")
        return node_id

    @abort_on_error
    def CreateNode(self, request: fpb.CreateNodeRequest, context: Call) -> fpb.CreateNodeResponse:
        interval = check_heartbeat_interval(request.heartbeat_interval or self._default_heartbeat)
        # With auth on, the key decides the id (bound at `flwr supernode register`).
        caller = context.caller
        wanted = caller.node_id if caller.verified else request.requested_node_id
        node_id = self._state.create_node(interval, wanted)
        log.info("node %d registered", node_id)
        return fpb.CreateNodeResponse(node_id=node_id, heartbeat_interval=interval)

    @abort_on_error
    def DeleteNode(self, request: fpb.DeleteNodeRequest, context: Call) -> fpb.DeleteNodeResponse:
        self._state.delete_node(context.caller.node_id)
        log.info("node %d left", context.caller.node_id)
        return fpb.DeleteNodeResponse()

    @abort_on_error
    def Heartbeat(self, request: fpb.HeartbeatRequest, context: Call) -> fpb.HeartbeatResponse:
        interval = check_heartbeat_interval(request.heartbeat_interval or self._default_heartbeat)
        self._state.heartbeat(context.caller.node_id, interval)
        finished = self._finished(request.active_run_ids)
        return fpb.HeartbeatResponse(success=True, finished_run_ids=finished)

    @abort_on_error
    async def PullMessages(
        self, request: fpb.FleetPullMessagesRequest, context: Call
    ) -> fpb.FleetPullMessagesResponse:
        """Acknowledges what the node received, then returns its instructions (or the runs of
        ``active_run_ids`` that ended) as soon as there are any, or nothing after the wait."""
        wait = check_wait(request.wait_seconds)
        if len(request.ack_message_ids) > MAX_ACKS:
            raise InvalidArgument(f"at most {MAX_ACKS} acknowledgements per pull")
        node_id = context.caller.node_id
        acks = list(request.ack_message_ids)
        limit = min(request.max_messages or MAX_BATCH, MAX_BATCH)
        runs = list(request.active_run_ids)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        everything = False  # woken by `wake_all`: one more look, then return
        with self._slots.hold(wait):
            while True:
                # Watched before the look: a change while looking still ends the wait.
                with self._wakeups.watching(("node", node_id)) as changed:
                    found = None if acks else self._quick_look(node_id, runs)
                    if found is None:
                        found = await asyncio.to_thread(self._pull_now, node_id, acks, limit, runs)
                    stored, finished = found
                    acks = []
                    remaining = deadline - loop.time()
                    if stored or finished or everything or remaining <= 0:
                        break
                    everything = await self._wakeups.wait(changed, remaining)
                    if not changed.done():  # the wait is over and nothing changed since the
                        break  # look: no need for another (thousands of polls end together)
        return fpb.FleetPullMessagesResponse(
            messages=[from_stored(m) for m in stored], finished_run_ids=finished
        )

    @abort_on_error
    async def Connect(self, requests: AsyncIterator[bytes], context: Call) -> None:
        """The node's open stream (`NodeStream`): instructions down as they come, heartbeats
        and acknowledgements up. Ends when the node closes it, or with the status of what went
        wrong (NOT_FOUND: the node is not registered; register again)."""
        node_id = await asyncio.to_thread(self._check_online, context.caller.node_id)
        if self._beats_writer is None or self._beats_writer.done():
            self._beats_writer = asyncio.ensure_future(self._write_heartbeats())
        stream = NodeStream(
            node_id,
            state=self._state,
            wakeups=self._wakeups,
            call=context,
            finished=self._finished,
            takes=self._takes,
            pushes=self._pushes,
            limit=MAX_BATCH,
        )
        with self._slots.hold(float("inf")):
            await stream.run(requests)

    async def _write_heartbeats(self) -> None:
        """The heartbeats the streams answered from memory (`LinkState.heartbeat_nowait`) go to
        the database from here, in batches, so that no heartbeat waits for it. One task on the
        loop, for as long as the loop runs."""
        while True:
            await asyncio.sleep(WRITE_HEARTBEATS_EVERY)
            try:
                await asyncio.to_thread(self._state.write_heartbeats)
            except CorollaError as exc:  # the state is away or closing: the next turn tries
                log.warning("heartbeats not written to the database yet: %s", exc)

    def _quick_look(
        self, node_id: int, runs: list[int]
    ) -> tuple[list[StoredMessage], list[int]] | None:
        """(On the loop.) The look's answer if the state can give it without a query: nothing
        to pull and the runs' ends known (`LinkState.may_have_instructions`, `ended_runs`);
        None if a query is needed. (Whether the node is registered is then not checked: its
        next heartbeat says so.)"""
        if self._state.may_have_instructions(node_id):
            return None
        finished = self._state.ended_runs(runs) if runs else []
        return None if finished is None else ([], finished)

    def _pull_now(
        self, node_id: int, acks: list[str], limit: int, runs: list[int]
    ) -> tuple[list[StoredMessage], list[int]]:
        """(On a thread.) The node's instructions now, and those of ``runs`` that ended."""
        self._check_online(node_id)
        self._state.ack_instructions(node_id, acks)
        finished = self._finished(runs)
        return self._state.pull_instructions(node_id, limit), finished

    def _finished(self, run_ids: Iterable[int]) -> list[int]:
        """Those of ``run_ids`` that have ended (or that the SuperLink does not know)."""
        run_ids = list(run_ids)
        if (known := self._state.ended_runs(run_ids)) is not None:  # no query needed
            return known
        finished = []
        for run_id in run_ids:
            try:
                if self._state.get_run(run_id).status == RunStatus.FINISHED:
                    finished.append(run_id)
            except (NotFound, InvalidArgument):
                finished.append(run_id)
        return finished

    @abort_on_error
    def PushMessages(
        self, request: fpb.FleetPushMessagesRequest, context: Call
    ) -> fpb.FleetPushMessagesResponse:
        node_id = self._online(context)
        messages = list(request.messages)
        self._replies.submit((node_id, messages))  # with the pushes of other nodes meanwhile
        return fpb.FleetPushMessagesResponse(message_ids=[m.metadata.message_id for m in messages])

    def _store_pushes(self, pushes: Sequence[Push]) -> list[CorollaError | None]:
        """(On a thread.) Each node's replies checked and stored, all in one transaction, each
        push on its own: None, or the error of that push."""
        outcomes: list[CorollaError | None] = [None] * len(pushes)
        checked: list[tuple[int, list[StoredMessage]]] = []
        where: list[int] = []  # the index of each checked push
        for index, (node_id, messages) in enumerate(pushes):
            try:
                checked.append((node_id, self._replies_from(node_id, messages)))
                where.append(index)
            except CorollaError as exc:
                outcomes[index] = exc
        for index, outcome in zip(where, self._state.store_replies_many(checked), strict=True):
            outcomes[index] = outcome
        return outcomes

    def _replies_from(self, node_id: int, messages: list[mpb.Message]) -> list[StoredMessage]:
        self._check_online(node_id)
        replies = []
        for proto in messages:
            if proto.metadata.src_node_id != node_id:
                raise PermissionDenied(
                    f"node {node_id} cannot send as node {proto.metadata.src_node_id}"
                )
            if not proto.metadata.reply_to_message_id:
                raise InvalidArgument("a node can only send replies (reply_to_message_id missing)")
            replies.append(to_stored(proto, self._state))
        return replies

    @abort_on_error
    def GetRun(self, request: rpb.GetRunRequest, context: Call) -> rpb.GetRunResponse:
        self._served(context, request.run_id)
        return rpb.GetRunResponse(run=run_to_proto(self._state.get_run(request.run_id)))

    @abort_on_error
    def GetFab(self, request: rpb.GetFabRequest, context: Call) -> rpb.GetFabResponse:
        node_id = self._served(context, request.run_id)
        if self._state.get_run(request.run_id).fab_hash != request.fab_hash:
            raise PermissionDenied(f"run {request.run_id} of node {node_id} has another FAB")
        return rpb.GetFabResponse(
            fab=fab_to_proto(request.fab_hash, self._state.get_fab(request.fab_hash))
        )

    @abort_on_error
    def PushLogs(
        self, request: fpb.FleetPushLogsRequest, context: Call
    ) -> fpb.FleetPushLogsResponse:
        self._served(context, request.run_id)
        self._state.append_logs(request.run_id, list(request.lines))
        return fpb.FleetPushLogsResponse()

    @abort_on_error
    def PushObjects(
        self, request_iterator: Iterator[bytes], context: Call
    ) -> opb.PushObjectsResponse:
        raw = dict(context.invocation_metadata()).get(RUN_ID_KEY, "0")
        try:
            run_id = int(str(raw))
        except ValueError as exc:
            raise InvalidArgument(f"malformed {RUN_ID_KEY} metadata") from exc
        self._served(context, run_id)
        if self._state.get_run(run_id).status == RunStatus.FINISHED:
            raise PermissionDenied(f"run {run_id} has finished")
        return store_pushed(self._state, run_id, request_iterator)

    @abort_on_error
    def PullObjects(self, request: opb.PullObjectsRequest, context: Call) -> Iterator[bytes]:
        node_id = self._served(context, request.run_id)
        ids = list(request.object_ids)
        allowed = self._state.node_object_ids(node_id, request.run_id, ids)
        if refused := [oid for oid in ids if oid not in allowed]:
            raise NotFound(f"no instruction to node {node_id} references objects {refused}")
        encoding = negotiated(self._compression, request.accept_encodings)
        return stream_stored(self._state, ids, encoding)

    @abort_on_error
    def MissingObjects(
        self, request: opb.MissingObjectsRequest, context: Call
    ) -> opb.MissingObjectsResponse:
        self._served(context, request.run_id)
        return missing_response(self._state, request.run_id, request.object_ids)
