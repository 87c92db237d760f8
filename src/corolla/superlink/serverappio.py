"""ServerAppIo API servicer: the flwr-serverapp process of a run talks to the SuperLink here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from corolla.common.compression import NONE, negotiated
from corolla.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from corolla.common.grpc import WaitSlots, abort_on_error
from corolla.common.guard import Call, Credential, Policy
from corolla.common.protocol import SERVER_NODE_ID, check_wait
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

LOST_CHECK_INTERVAL = 1.0  # seconds between looks for the lost instructions of one run
MAX_TRACKED_RUNS = 10_000

# Every call but RequestRun is authenticated by the run's token (`AppIoAuth`), so the run a
# call acts on is always the token's run.
POLICY: Policy = {
    "RequestRun": Credential.APP_SECRET,
    "Heartbeat": Credential.RUN_TOKEN,
    "PullAppInputs": Credential.RUN_TOKEN,
    "PushAppOutputs": Credential.RUN_TOKEN,
    "GetNodes": Credential.RUN_TOKEN,
    "PushMessages": Credential.RUN_TOKEN,
    "PullMessages": Credential.RUN_TOKEN,
    "GetRun": Credential.RUN_TOKEN,
    "GetRunStatus": Credential.RUN_TOKEN,
    "PushLogs": Credential.RUN_TOKEN,
    "PushObjects": Credential.RUN_TOKEN,
    "PullObjects": Credential.RUN_TOKEN,
    "MissingObjects": Credential.RUN_TOKEN,
    "PushCheckpoint": Credential.RUN_TOKEN,
    "PullCheckpoint": Credential.RUN_TOKEN,
}


class ServerAppIoServicer:
    def __init__(
        self,
        runs: Runs,
        *,
        heartbeats: AppHeartbeats,
        dispatcher: ProcessDispatcher | None = None,
        wait_slots: WaitSlots | None = None,
        compression: str = NONE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runs = runs
        self._state = runs.state
        self._heartbeats = heartbeats
        self._dispatcher = dispatcher
        self._slots = wait_slots or WaitSlots(48)
        self._compression = compression  # toward pullers that accept it (--compression)
        self._clock = clock
        self._lost_checked: dict[int, float] = {}  # run -> when its lost instructions were

    @staticmethod
    def _run_for(context: Call, run_id: int | None = None) -> int:
        owner = context.caller.run_id
        if run_id is not None and run_id != owner:
            raise PermissionDenied(f"this token belongs to run {owner}, not run {run_id}")
        return owner

    def _active_run(self, context: Call, run_id: int | None = None) -> int:
        run_id = self._run_for(context, run_id)
        run = self._state.get_run(run_id)
        if run.status == RunStatus.FINISHED:
            raise FailedPrecondition(f"run {run_id} has finished ({run.sub_status})")
        return run_id

    @abort_on_error
    def RequestRun(self, request: spb.RequestRunRequest, context: Call) -> spb.RequestRunResponse:
        wait = check_wait(request.wait_seconds)
        if self._dispatcher is None:
            raise FailedPrecondition("this SuperLink starts its own ServerApp processes")
        with self._slots.hold(wait) as granted:
            claimed = self._dispatcher.claim(granted)
        if claimed is None:
            return spb.RequestRunResponse()
        return spb.RequestRunResponse(run_id=claimed[0], token=claimed[1])

    @abort_on_error
    def Heartbeat(
        self, request: spb.AppHeartbeatRequest, context: Call
    ) -> spb.AppHeartbeatResponse:
        run_id = self._run_for(context)
        active = self._state.get_run(run_id).status != RunStatus.FINISHED
        if active:
            self._heartbeats.beat(run_id)
        return spb.AppHeartbeatResponse(run_active=active)

    @abort_on_error
    def PullAppInputs(
        self, request: spb.PullAppInputsRequest, context: Call
    ) -> spb.PullAppInputsResponse:
        run_id = self._active_run(context)
        self._heartbeats.beat(run_id)
        run = self._runs.mark_running(run_id)
        stored = self._state.get_context(run_id)
        if stored is not None:
            ctx = mpb.Context.FromString(stored)
        else:
            ctx = context_to_proto(
                Context(run_id=run_id, node_id=SERVER_NODE_ID, run_config=dict(run.run_config))
            )
        # Our own child (isolation subprocess: no dispatcher) may map the checked object files
        # and put the objects it pushes in a staging directory.
        own_child = self._dispatcher is None
        shared = self._state.object_directory if own_child else None
        staging = self._state.staging_directory(run_id, create=True) if own_child else None
        return spb.PullAppInputsResponse(
            run=run_to_proto(run),
            fab=fab_to_proto(run.fab_hash, self._state.get_fab(run.fab_hash)),
            context=ctx,
            object_dir="" if shared is None else str(shared),
            staging_dir="" if staging is None else str(staging),
        )

    @abort_on_error
    def PushAppOutputs(
        self, request: spb.PushAppOutputsRequest, context: Call
    ) -> spb.PushAppOutputsResponse:
        run_id = self._run_for(context)
        if request.HasField("context"):
            self._state.set_context(run_id, request.context.SerializeToString())
        self._runs.finish(run_id, request.sub_status or SubStatus.COMPLETED, request.details)
        return spb.PushAppOutputsResponse()

    @abort_on_error
    def GetNodes(self, request: spb.GetNodesRequest, context: Call) -> spb.GetNodesResponse:
        self._active_run(context, request.run_id)
        return spb.GetNodesResponse(node_ids=self._state.online_node_ids())

    @abort_on_error
    def PushMessages(
        self, request: spb.PushMessagesRequest, context: Call
    ) -> spb.PushMessagesResponse:
        run_id = self._active_run(context, request.run_id)
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
        self, request: spb.PullMessagesRequest, context: Call
    ) -> spb.PullMessagesResponse:
        wait = check_wait(request.wait_seconds)
        run_id = self._active_run(context, request.run_id)
        self._state.ack_replies(run_id, list(request.ack_message_ids))
        ids = list(request.message_ids)
        with self._slots.hold(wait) as granted:
            replies = [from_stored(m) for m in self._state.pull_replies(run_id, ids, granted)]
        if self._lost_check_due(run_id):
            answered = {r.metadata.reply_to_message_id for r in replies}
            unanswered = [mid for mid in ids if mid not in answered]
            replies += lost_replies(self._state, run_id, unanswered)
        return spb.PullMessagesResponse(messages=replies)

    def _lost_check_due(self, run_id: int) -> bool:
        """Whether to look for the run's lost instructions now: at most once a
        `LOST_CHECK_INTERVAL` (a fan-out to thousands of nodes is polled many times a second,
        and nodes go offline only after missing heartbeats for seconds)."""
        now = self._clock()
        last = self._lost_checked.get(run_id)
        if last is not None and now - last < LOST_CHECK_INTERVAL:
            return False
        if len(self._lost_checked) > MAX_TRACKED_RUNS:
            self._lost_checked.clear()  # of runs long gone, mostly: each checks again at once
        self._lost_checked[run_id] = now
        return True

    @abort_on_error
    def GetRun(self, request: rpb.GetRunRequest, context: Call) -> rpb.GetRunResponse:
        run_id = self._run_for(context, request.run_id or None)
        return rpb.GetRunResponse(run=run_to_proto(self._state.get_run(run_id)))

    @abort_on_error
    def GetRunStatus(
        self, request: spb.GetRunStatusRequest, context: Call
    ) -> spb.GetRunStatusResponse:
        run_id = self._run_for(context)
        run = self._state.get_run(run_id)
        status = rpb.RunStatus(status=run.status, sub_status=run.sub_status, details=run.details)
        return spb.GetRunStatusResponse(statuses={run_id: status})

    @abort_on_error
    def PushLogs(self, request: spb.PushLogsRequest, context: Call) -> spb.PushLogsResponse:
        run_id = self._run_for(context, request.run_id or None)
        self._state.append_logs(run_id, list(request.lines))
        return spb.PushLogsResponse()

    @abort_on_error
    def PushObjects(
        self, request_iterator: Iterator[bytes], context: Call
    ) -> opb.PushObjectsResponse:
        run_id = self._active_run(context)
        return store_pushed(self._state, run_id, request_iterator)

    @abort_on_error
    def PullObjects(self, request: opb.PullObjectsRequest, context: Call) -> Iterator[bytes]:
        run_id = self._run_for(context)
        ids = list(request.object_ids)
        allowed = self._state.run_object_ids(run_id, ids)
        if refused := [oid for oid in ids if oid not in allowed]:
            raise NotFound(f"run {run_id} has no objects {refused}")
        encoding = negotiated(self._compression, request.accept_encodings)
        return stream_stored(self._state, ids, encoding)

    @abort_on_error
    def MissingObjects(
        self, request: opb.MissingObjectsRequest, context: Call
    ) -> opb.MissingObjectsResponse:
        run_id = self._run_for(context)
        staging = self._state.staging_directory(run_id) if self._dispatcher is None else None
        return missing_response(self._state, run_id, request.object_ids, staging)

    @abort_on_error
    def PushCheckpoint(
        self, request: spb.PushCheckpointRequest, context: Call
    ) -> spb.PushCheckpointResponse:
        run_id = self._active_run(context, request.run_id)
        checkpoint = request.checkpoint
        object_ids = referenced_object_ids([checkpoint])
        of_run = self._state.run_object_ids(run_id, object_ids)
        if missing := [oid for oid in object_ids if oid not in of_run]:
            raise FailedPrecondition(f"checkpoint references objects not pushed yet: {missing}")
        self._state.set_checkpoint(
            run_id, request.server_round, checkpoint.SerializeToString(), object_ids
        )
        return spb.PushCheckpointResponse()

    @abort_on_error
    def PullCheckpoint(
        self, request: spb.PullCheckpointRequest, context: Call
    ) -> spb.PullCheckpointResponse:
        run_id = self._active_run(context, request.run_id)
        stored = self._state.get_checkpoint(run_id)
        if stored is None:
            return spb.PullCheckpointResponse()
        return spb.PullCheckpointResponse(
            server_round=stored[0], checkpoint=mpb.Context.FromString(stored[1])
        )
