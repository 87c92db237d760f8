"""ServerAppIo API servicer: the flwr-serverapp process of a run talks to the SuperLink here."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc

from corolla.common.appio import check_secret
from corolla.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from corolla.common.grpc import abort_on_error
from corolla.common.protocol import MAX_LONG_POLL, SERVER_NODE_ID
from corolla.common.transfer import TOKEN_KEY, call_metadata
from corolla.proto.v1 import message_pb2 as mpb
from corolla.proto.v1 import objects_pb2 as opb
from corolla.proto.v1 import run_pb2 as rpb
from corolla.proto.v1 import serverappio_pb2 as spb
from corolla.records.context import Context
from corolla.records.serde import context_to_proto, referenced_object_ids
from corolla.superlink.convert import fab_to_proto, run_to_proto
from corolla.superlink.dispatcher import ProcessDispatcher
from corolla.superlink.heartbeats import AppHeartbeats
from corolla.superlink.messages import from_stored, lost_replies, to_stored
from corolla.superlink.objects import missing_response, store_pushed, stream_stored
from corolla.superlink.runs import Runs
from corolla.superlink.state import RunStatus, SubStatus

log = logging.getLogger(__name__)


class ServerAppIoServicer:
    def __init__(
        self,
        runs: Runs,
        *,
        secret: str,
        heartbeats: AppHeartbeats,
        dispatcher: ProcessDispatcher | None = None,
    ) -> None:
        self._runs = runs
        self._state = runs.state
        self._secret = secret
        self._heartbeats = heartbeats
        self._dispatcher = dispatcher

    def _run_for(self, token: str, run_id: int | None = None) -> int:
        owner = self._state.run_id_for_token(token)
        if run_id is not None and run_id != owner:
            raise PermissionDenied(f"this token belongs to run {owner}, not run {run_id}")
        return owner

    def _active_run(self, token: str, run_id: int | None = None) -> int:
        run_id = self._run_for(token, run_id)
        run = self._state.get_run(run_id)
        if run.status == RunStatus.FINISHED:
            raise FailedPrecondition(f"run {run_id} has finished ({run.sub_status})")
        return run_id

    @abort_on_error
    def RequestRun(
        self, request: spb.RequestRunRequest, context: grpc.ServicerContext
    ) -> spb.RequestRunResponse:
        check_secret(self._secret, request.secret)
        if self._dispatcher is None:
            raise FailedPrecondition("this SuperLink starts its own ServerApp processes")
        claimed = self._dispatcher.claim(min(max(request.wait_seconds, 0.0), MAX_LONG_POLL))
        if claimed is None:
            return spb.RequestRunResponse()
        return spb.RequestRunResponse(run_id=claimed[0], token=claimed[1])

    @abort_on_error
    def Heartbeat(
        self, request: spb.AppHeartbeatRequest, context: grpc.ServicerContext
    ) -> spb.AppHeartbeatResponse:
        run_id = self._run_for(request.token)
        active = self._state.get_run(run_id).status != RunStatus.FINISHED
        if active:
            self._heartbeats.beat(run_id)
        return spb.AppHeartbeatResponse(run_active=active)

    @abort_on_error
    def PullAppInputs(
        self, request: spb.PullAppInputsRequest, context: grpc.ServicerContext
    ) -> spb.PullAppInputsResponse:
        run_id = self._active_run(request.token)
        self._heartbeats.beat(run_id)
        run = self._runs.mark_running(run_id)
        stored = self._state.get_context(run_id)
        if stored is not None:
            ctx = mpb.Context.FromString(stored)
        else:
            ctx = context_to_proto(
                Context(run_id=run_id, node_id=SERVER_NODE_ID, run_config=dict(run.run_config))
            )
        return spb.PullAppInputsResponse(
            run=run_to_proto(run),
            fab=fab_to_proto(run.fab_hash, self._state.get_fab(run.fab_hash)),
            context=ctx,
        )

    @abort_on_error
    def PushAppOutputs(
        self, request: spb.PushAppOutputsRequest, context: grpc.ServicerContext
    ) -> spb.PushAppOutputsResponse:
        run_id = self._run_for(request.token)
        if request.HasField("context"):
            self._state.set_context(run_id, request.context.SerializeToString())
        self._runs.finish(run_id, request.sub_status or SubStatus.COMPLETED, request.details)
        return spb.PushAppOutputsResponse()

    @abort_on_error
    def GetNodes(
        self, request: spb.GetNodesRequest, context: grpc.ServicerContext
    ) -> spb.GetNodesResponse:
        self._active_run(request.token, request.run_id)
        return spb.GetNodesResponse(node_ids=self._state.online_node_ids())

    @abort_on_error
    def PushMessages(
        self, request: spb.PushMessagesRequest, context: grpc.ServicerContext
    ) -> spb.PushMessagesResponse:
        run_id = self._active_run(request.token, request.run_id)
        stored = []
        for proto in request.messages:
            if proto.metadata.run_id != run_id:
                raise InvalidArgument(
                    f"message for run {proto.metadata.run_id} pushed in run {run_id}"
                )
            if proto.metadata.reply_to_message_id:
                raise InvalidArgument("a ServerApp sends instructions, not replies")
            proto.metadata.src_node_id = SERVER_NODE_ID
            stored.append(to_stored(proto, self._state))
        self._state.store_instructions(stored)
        return spb.PushMessagesResponse(message_ids=[m.message_id for m in stored])

    @abort_on_error
    def PullMessages(
        self, request: spb.PullMessagesRequest, context: grpc.ServicerContext
    ) -> spb.PullMessagesResponse:
        run_id = self._active_run(request.token, request.run_id)
        self._state.ack_replies(run_id, list(request.ack_message_ids))
        ids = list(request.message_ids)
        wait = min(max(request.wait_seconds, 0.0), MAX_LONG_POLL)
        replies = [from_stored(m) for m in self._state.pull_replies(run_id, ids, wait=wait)]
        answered = {r.metadata.reply_to_message_id for r in replies}
        replies += lost_replies(self._state, run_id, [mid for mid in ids if mid not in answered])
        return spb.PullMessagesResponse(messages=replies)

    @abort_on_error
    def GetRun(
        self, request: rpb.GetRunRequest, context: grpc.ServicerContext
    ) -> rpb.GetRunResponse:
        run_id = self._run_for(request.token, request.run_id or None)
        return rpb.GetRunResponse(run=run_to_proto(self._state.get_run(run_id)))

    @abort_on_error
    def GetRunStatus(
        self, request: spb.GetRunStatusRequest, context: grpc.ServicerContext
    ) -> spb.GetRunStatusResponse:
        run_id = self._run_for(request.token)
        run = self._state.get_run(run_id)
        status = rpb.RunStatus(status=run.status, sub_status=run.sub_status, details=run.details)
        return spb.GetRunStatusResponse(statuses={run_id: status})

    @abort_on_error
    def PushLogs(
        self, request: spb.PushLogsRequest, context: grpc.ServicerContext
    ) -> spb.PushLogsResponse:
        run_id = self._run_for(request.token, request.run_id or None)
        self._state.append_logs(run_id, list(request.lines))
        return spb.PushLogsResponse()

    @abort_on_error
    def PushObjects(
        self, request_iterator: Iterator[bytes], context: grpc.ServicerContext
    ) -> opb.PushObjectsResponse:
        run_id = self._active_run(call_metadata(context).get(TOKEN_KEY, ""))
        return store_pushed(self._state, run_id, request_iterator)

    @abort_on_error
    def PullObjects(
        self, request: opb.PullObjectsRequest, context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        self._run_for(request.token)
        return stream_stored(self._state, request.object_ids)

    @abort_on_error
    def MissingObjects(
        self, request: opb.MissingObjectsRequest, context: grpc.ServicerContext
    ) -> opb.MissingObjectsResponse:
        self._run_for(request.token)
        return missing_response(self._state, request.object_ids)

    @abort_on_error
    def PushCheckpoint(
        self, request: spb.PushCheckpointRequest, context: grpc.ServicerContext
    ) -> spb.PushCheckpointResponse:
        run_id = self._active_run(request.token, request.run_id)
        checkpoint = request.checkpoint
        object_ids = referenced_object_ids([checkpoint])
        self._state.set_checkpoint(
            run_id, request.server_round, checkpoint.SerializeToString(), object_ids
        )
        return spb.PushCheckpointResponse()

    @abort_on_error
    def PullCheckpoint(
        self, request: spb.PullCheckpointRequest, context: grpc.ServicerContext
    ) -> spb.PullCheckpointResponse:
        run_id = self._active_run(request.token, request.run_id)
        stored = self._state.get_checkpoint(run_id)
        if stored is None:
            return spb.PullCheckpointResponse()
        return spb.PullCheckpointResponse(
            server_round=stored[0], checkpoint=mpb.Context.FromString(stored[1])
        )
