"""Fleet API servicer: SuperNodes register, pull work, push replies, objects and logs."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import grpc

from corolla.common.errors import InvalidArgument, NotFound, PermissionDenied
from corolla.common.grpc import abort_on_error
from corolla.common.protocol import MAX_HEARTBEAT_INTERVAL, MAX_LONG_POLL, MIN_HEARTBEAT_INTERVAL
from corolla.common.transfer import NODE_ID_KEY, RUN_ID_KEY, call_metadata
from corolla.proto.v1 import fleet_pb2 as fpb
from corolla.proto.v1 import objects_pb2 as opb
from corolla.proto.v1 import run_pb2 as rpb
from corolla.superlink.convert import fab_to_proto, run_to_proto
from corolla.superlink.messages import from_stored, to_stored
from corolla.superlink.objects import missing_response, store_pushed, stream_stored
from corolla.superlink.state import LinkState, RunStatus

log = logging.getLogger(__name__)

MAX_BATCH = 64


class FleetServicer:
    def __init__(self, state: LinkState, default_heartbeat: float = 5.0) -> None:
        self._state = state
        self._default_heartbeat = default_heartbeat

    def _known_node(self, node_id: int) -> int:
        if node_id not in self._state.online_node_ids():
            raise NotFound(f"node {node_id} is not registered (register again)")
        return node_id

    @abort_on_error
    def CreateNode(
        self, request: fpb.CreateNodeRequest, context: grpc.ServicerContext
    ) -> fpb.CreateNodeResponse:
        interval = request.heartbeat_interval or self._default_heartbeat
        if not MIN_HEARTBEAT_INTERVAL <= interval <= MAX_HEARTBEAT_INTERVAL:
            raise InvalidArgument(
                f"heartbeat_interval must be between {MIN_HEARTBEAT_INTERVAL:g} and "
                f"{MAX_HEARTBEAT_INTERVAL:g} seconds"
            )
        node_id = self._state.create_node(interval, request.requested_node_id)
        log.info("node %d registered", node_id)
        return fpb.CreateNodeResponse(node_id=node_id, heartbeat_interval=interval)

    @abort_on_error
    def DeleteNode(
        self, request: fpb.DeleteNodeRequest, context: grpc.ServicerContext
    ) -> fpb.DeleteNodeResponse:
        self._state.delete_node(request.node_id)
        log.info("node %d left", request.node_id)
        return fpb.DeleteNodeResponse()

    @abort_on_error
    def Heartbeat(
        self, request: fpb.HeartbeatRequest, context: grpc.ServicerContext
    ) -> fpb.HeartbeatResponse:
        interval = request.heartbeat_interval or self._default_heartbeat
        self._state.heartbeat(request.node_id, interval)
        finished = self._finished(request.active_run_ids)
        return fpb.HeartbeatResponse(success=True, finished_run_ids=finished)

    @abort_on_error
    def PullMessages(
        self, request: fpb.FleetPullMessagesRequest, context: grpc.ServicerContext
    ) -> fpb.FleetPullMessagesResponse:
        node_id = self._known_node(request.node_id)
        wait = min(max(request.wait_seconds, 0.0), MAX_LONG_POLL)
        limit = min(request.max_messages or MAX_BATCH, MAX_BATCH)
        finished = self._finished(request.active_run_ids)
        stored = self._state.pull_instructions(node_id, limit, wait=0.0 if finished else wait)
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
            except NotFound:
                finished.append(run_id)
        return finished

    @abort_on_error
    def PushMessages(
        self, request: fpb.FleetPushMessagesRequest, context: grpc.ServicerContext
    ) -> fpb.FleetPushMessagesResponse:
        node_id = self._known_node(request.node_id)
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
    def GetRun(
        self, request: rpb.GetRunRequest, context: grpc.ServicerContext
    ) -> rpb.GetRunResponse:
        self._known_node(request.node_id)
        return rpb.GetRunResponse(run=run_to_proto(self._state.get_run(request.run_id)))

    @abort_on_error
    def GetFab(
        self, request: rpb.GetFabRequest, context: grpc.ServicerContext
    ) -> rpb.GetFabResponse:
        self._known_node(request.node_id)
        return rpb.GetFabResponse(
            fab=fab_to_proto(request.fab_hash, self._state.get_fab(request.fab_hash))
        )

    @abort_on_error
    def PushLogs(
        self, request: fpb.FleetPushLogsRequest, context: grpc.ServicerContext
    ) -> fpb.FleetPushLogsResponse:
        self._known_node(request.node_id)
        self._state.get_run(request.run_id)
        self._state.append_logs(request.run_id, list(request.lines))
        return fpb.FleetPushLogsResponse()

    @abort_on_error
    def PushObjects(
        self, request_iterator: Iterator[bytes], context: grpc.ServicerContext
    ) -> opb.PushObjectsResponse:
        metadata = call_metadata(context)
        self._known_node(int(metadata.get(NODE_ID_KEY, "0")))
        return store_pushed(self._state, int(metadata.get(RUN_ID_KEY, "0")), request_iterator)

    @abort_on_error
    def PullObjects(
        self, request: opb.PullObjectsRequest, context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        self._known_node(request.node_id)
        return stream_stored(self._state, request.object_ids)

    @abort_on_error
    def MissingObjects(
        self, request: opb.MissingObjectsRequest, context: grpc.ServicerContext
    ) -> opb.MissingObjectsResponse:
        self._known_node(request.node_id)
        return missing_response(self._state, request.object_ids)
