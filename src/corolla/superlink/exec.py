"""Exec API servicer: the flwr CLI submits, lists, stops and follows runs here."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator

from corolla.common import nodekeys
from corolla.common.grpc import WaitSlots, abort_on_error
from corolla.common.guard import Call, Credential, Policy
from corolla.proto.v1 import exec_pb2 as epb
from corolla.proto.v1 import run_pb2 as rpb
from corolla.records.serde import user_config_from_proto
from corolla.superlink.access import ExecAccess
from corolla.superlink.convert import run_to_proto
from corolla.superlink.runs import Runs
from corolla.superlink.state import RunStatus
from corolla.superlink.userauth import UserAuthConfig

log = logging.getLogger(__name__)

LOG_POLL = 0.1
MAX_FOLLOWERS = 16  # `flwr log --follow` streams at once; the Exec server has 32 threads

POLICY: Policy = {
    "StartRun": Credential.USER,
    "StopRun": Credential.USER,
    "ListRuns": Credential.USER,
    "StreamLogs": Credential.USER,
    "RegisterNode": Credential.USER,
    "UnregisterNode": Credential.USER,
    "ListNodes": Credential.USER,
    "GetLoginDetails": Credential.PUBLIC,
    "ListAuditEvents": Credential.USER,
}
# Who is who, and which roles each method needs: `corolla.superlink.access` (`ExecAccess`).
DEFAULT_AUDIT_LIMIT = 100


class ExecServicer:
    def __init__(
        self,
        runs: Runs,
        on_run_submitted: Callable[[], None],
        *,
        access: ExecAccess | None = None,
        user_auth: UserAuthConfig | None = None,
        followers: WaitSlots | None = None,
    ) -> None:
        self._runs = runs
        self._state = runs.state
        self._on_submitted = on_run_submitted
        self._access = access or ExecAccess(runs.state)
        self._user_auth = user_auth
        self._followers = followers or WaitSlots(MAX_FOLLOWERS, "followed log streams")

    @abort_on_error
    def StartRun(self, request: epb.StartRunRequest, context: Call) -> epb.StartRunResponse:
        with self._access.audited(context, "StartRun") as outcome:
            outcome.run_id = self._runs.submit(
                request.fab.content,
                request.fab.hash,
                user_config_from_proto(request.override_config),
                request.federation,
                owner=context.caller.user,
                federation_options=user_config_from_proto(request.federation_options),
            )
        self._on_submitted()
        return epb.StartRunResponse(run_id=outcome.run_id)

    @abort_on_error
    def StopRun(self, request: epb.StopRunRequest, context: Call) -> epb.StopRunResponse:
        with self._access.audited(context, "StopRun", request.run_id):
            self._access.check_write(context.caller, self._state.get_run(request.run_id))
            stopped = self._runs.stop(request.run_id)
        if stopped:
            self._on_submitted()
        return epb.StopRunResponse(stopped=stopped)

    @abort_on_error
    def ListRuns(self, request: epb.ListRunsRequest, context: Call) -> epb.ListRunsResponse:
        caller = context.caller
        with self._access.audited(context, "ListRuns", request.run_id):
            if request.run_id:
                runs = [self._state.get_run(request.run_id)]
                self._access.check_read(caller, runs[0])
            else:
                runs = [r for r in self._state.list_runs() if self._access.visible(caller, r)]
        return epb.ListRunsResponse(runs=[run_to_proto(r) for r in runs], now=time.time())

    @abort_on_error
    def StreamLogs(
        self, request: epb.StreamLogsRequest, context: Call
    ) -> Iterator[epb.StreamLogsResponse]:
        with self._access.audited(context, "StreamLogs", request.run_id):
            # NotFound (or another user's run) before the stream starts
            self._access.check_read(context.caller, self._state.get_run(request.run_id))
        if not request.follow:
            return self._stream(request, context)
        return self._followed(request, context)

    def _followed(
        self, request: epb.StreamLogsRequest, context: Call
    ) -> Iterator[epb.StreamLogsResponse]:
        with self._followers.hold(math.inf):  # a slot for as long as the stream lasts
            yield from self._stream(request, context)

    @abort_on_error
    def RegisterNode(
        self, request: epb.RegisterNodeRequest, context: Call
    ) -> epb.RegisterNodeResponse:
        with self._access.audited(context, "RegisterNode"):
            key = nodekeys.load_public_key(request.public_key)
            der = nodekeys.public_der(key)
            fingerprint = nodekeys.fingerprint(der)
            node_id = self._state.register_node_key(der, fingerprint)
        log.info("SuperNode key %s registered as node %d", fingerprint, node_id)
        return epb.RegisterNodeResponse(node_id=node_id, fingerprint=fingerprint)

    @abort_on_error
    def UnregisterNode(
        self, request: epb.UnregisterNodeRequest, context: Call
    ) -> epb.UnregisterNodeResponse:
        with self._access.audited(context, "UnregisterNode"):
            self._state.unregister_node(request.node_id)
        log.info("node %d unregistered", request.node_id)
        return epb.UnregisterNodeResponse()

    @abort_on_error
    def ListNodes(self, request: epb.ListNodesRequest, context: Call) -> epb.ListNodesResponse:
        with self._access.audited(context, "ListNodes"):
            found = self._state.list_nodes()
        nodes = [
            epb.NodeInfo(
                node_id=node.node_id,
                fingerprint=node.fingerprint,
                online=node.online,
                last_seen=node.last_seen,
                registered_at=node.registered_at,
            )
            for node in found
        ]
        return epb.ListNodesResponse(nodes=nodes, now=time.time())

    @abort_on_error
    def GetLoginDetails(
        self, request: epb.GetLoginDetailsRequest, context: Call
    ) -> epb.GetLoginDetailsResponse:
        config = self._user_auth
        if config is None:
            return epb.GetLoginDetailsResponse(login_required=False)
        return epb.GetLoginDetailsResponse(
            login_required=True,
            issuer=config.issuer,
            client_id=config.client_id,
            scopes=list(config.scopes),
        )

    @abort_on_error
    def ListAuditEvents(
        self, request: epb.ListAuditEventsRequest, context: Call
    ) -> epb.ListAuditEventsResponse:
        with self._access.audited(context, "ListAuditEvents", request.run_id):
            events = self._state.list_audit(
                user=request.user,
                run_id=request.run_id,
                since=request.since,
                limit=request.limit or DEFAULT_AUDIT_LIMIT,
            )
        return epb.ListAuditEventsResponse(
            events=[
                epb.AuditEvent(
                    event_id=e.event_id,
                    at=e.at,
                    user=e.user,
                    action=e.action,
                    run_id=e.run_id,
                    allowed=e.allowed,
                    reason=e.reason,
                    peer=e.peer,
                )
                for e in events
            ]
        )

    def _stream(
        self, request: epb.StreamLogsRequest, context: Call
    ) -> Iterator[epb.StreamLogsResponse]:
        after = request.after
        while True:
            run = self._state.get_run(request.run_id)
            done = run.status == RunStatus.FINISHED
            status = rpb.RunStatus(
                status=run.status, sub_status=run.sub_status, details=run.details
            )
            sent = False
            while True:  # every line there is (for a finished run, those pushed just before
                # its end too), in batches the state bounds (1 MiB), never one huge response
                lines, after = self._state.get_logs(request.run_id, after)
                if not lines:
                    break
                yield epb.StreamLogsResponse(lines=lines, next=after, status=status)
                sent = True
            if not sent and (done or not request.follow):
                yield epb.StreamLogsResponse(lines=[], next=after, status=status)
            if done or not request.follow or not context.is_active():
                return
            self._state.wait_for_status_change(run.run_id, run.status, LOG_POLL)
