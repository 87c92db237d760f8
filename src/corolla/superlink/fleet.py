"""Fleet API servicer: SuperNodes register, pull work, push replies, objects and logs.

Every call comes from a node (`POLICY`): `FleetAuth` has established which one before a method
here runs (``context.caller.node_id``; verified when SuperNode authentication is on). Reads are
scoped to that node: the runs it was sent instructions of, their FABs, and the objects those
instructions reference; logs only for runs it serves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from corolla.common.compression import NONE, negotiated
from corolla.common.errors import InvalidArgument, NotFound, PermissionDenied
from corolla.common.grpc import WaitSlots, abort_on_error
from corolla.common.guard import Call, Credential, Policy
from corolla.common.protocol import check_heartbeat_interval, check_wait
from corolla.common.transfer import RUN_ID_KEY
from corolla.proto.v1 import fleet_pb2 as fpb
from corolla.proto.v1 import objects_pb2 as opb
from corolla.proto.v1 import run_pb2 as rpb
from corolla.superlink.convert import fab_to_proto, run_to_proto
from corolla.superlink.messages import from_stored, to_stored
from corolla.superlink.objects import missing_response, store_pushed, stream_stored
from corolla.superlink.state import LinkState, RunStatus

log = logging.getLogger(__name__)

MAX_BATCH = 64
MAX_ACKS = 16 * MAX_BATCH  # instruction ids one pull may acknowledge

POLICY: Policy = {
    "CreateNode": Credential.NODE,
    "DeleteNode": Credential.NODE,
    "Heartbeat": Credential.NODE,
    "PullMessages": Credential.NODE,
    "PushMessages": Credential.NODE,
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
        wait_slots: WaitSlots | None = None,
        compression: str = NONE,
    ) -> None:
        self._state = state
        self._default_heartbeat = default_heartbeat
        self._slots = wait_slots or WaitSlots(224)
        self._compression = compression  # toward pullers that accept it (--compression)

    def _online(self, context: Call) -> int:
        node_id = context.caller.node_id
        if node_id not in self._state.online_node_ids():
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
    def PullMessages(
        self, request: fpb.FleetPullMessagesRequest, context: Call
    ) -> fpb.FleetPullMessagesResponse:
        wait = check_wait(request.wait_seconds)
        node_id = self._online(context)
        if len(request.ack_message_ids) > MAX_ACKS:
            raise InvalidArgument(f"at most {MAX_ACKS} acknowledgements per pull")
        self._state.ack_instructions(node_id, list(request.ack_message_ids))
        limit = min(request.max_messages or MAX_BATCH, MAX_BATCH)
        finished = self._finished(request.active_run_ids)
        with self._slots.hold(wait) as granted:
            stored = self._state.pull_instructions(node_id, limit, 0.0 if finished else granted)
        if not stored and not finished:  # woken without work: perhaps a run ended
            finished = self._finished(request.active_run_ids)
        return fpb.FleetPullMessagesResponse(
            messages=[from_stored(m) for m in stored], finished_run_ids=finished
        )

    def _finished(self, run_ids: Iterable[int]) -> list[int]:
        """Those of ``run_ids`` that have ended (or that the SuperLink does not know)."""
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
        replies = []
        for proto in request.messages:
            if proto.metadata.src_node_id != node_id:
                raise PermissionDenied(
                    f"node {node_id} cannot send as node {proto.metadata.src_node_id}"
                )
            if not proto.metadata.reply_to_message_id:
                raise InvalidArgument("a node can only send replies (reply_to_message_id missing)")
            replies.append(to_stored(proto, self._state))
        self._state.store_replies(node_id, replies)
        return fpb.FleetPushMessagesResponse(message_ids=[r.message_id for r in replies])

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
