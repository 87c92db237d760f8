"""Exec API servicer: the flwr CLI submits, lists, stops and follows runs here."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator

from corolla.common import nodekeys
from corolla.common.grpc import WaitSlots, abort_on_error
from corolla.common.guard import Call, Caller, CallInfo, Credential, Policy
from corolla.proto.v1 import exec_pb2 as epb
from corolla.proto.v1 import run_pb2 as rpb
from corolla.records.serde import user_config_from_proto
from corolla.superlink.convert import run_to_proto
from corolla.superlink.runs import Runs
from corolla.superlink.state import RunStatus

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
}


def exec_auth(credential: Credential, call: CallInfo) -> Caller:
    """Exec callers: whoever the transport let in (mutual TLS: a certificate of the configured
    CA; the user is its subject's common name). User login (OIDC) will narrow this."""
    names = list(call.context.auth_context().get("x509_common_name", ()))
    first = names[0] if names else b""
    user = first.decode("utf-8", "replace") if isinstance(first, bytes) else ""
    return Caller(Credential.USER, user=user)


class ExecServicer:
    def __init__(
        self,
        runs: Runs,
        on_run_submitted: Callable[[], None],
        *,
        followers: WaitSlots | None = None,
    ) -> None:
        self._runs = runs
        self._state = runs.state
        self._on_submitted = on_run_submitted
        self._followers = followers or WaitSlots(MAX_FOLLOWERS, "followed log streams")

    @abort_on_error
    def StartRun(self, request: epb.StartRunRequest, context: Call) -> epb.StartRunResponse:
        run_id = self._runs.submit(
            request.fab.content,
            request.fab.hash,
            user_config_from_proto(request.override_config),
            request.federation,
        )
        self._on_submitted()
        return epb.StartRunResponse(run_id=run_id)

    @abort_on_error
    def StopRun(self, request: epb.StopRunRequest, context: Call) -> epb.StopRunResponse:
        stopped = self._runs.stop(request.run_id)
        if stopped:
            self._on_submitted()
        return epb.StopRunResponse(stopped=stopped)

    @abort_on_error
    def ListRuns(self, request: epb.ListRunsRequest, context: Call) -> epb.ListRunsResponse:
        runs = [self._state.get_run(request.run_id)] if request.run_id else self._state.list_runs()
        return epb.ListRunsResponse(runs=[run_to_proto(r) for r in runs], now=time.time())

    @abort_on_error
    def StreamLogs(
        self, request: epb.StreamLogsRequest, context: Call
    ) -> Iterator[epb.StreamLogsResponse]:
        self._state.get_run(request.run_id)  # NotFound before the stream starts
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
        self._state.unregister_node(request.node_id)
        log.info("node %d unregistered", request.node_id)
        return epb.UnregisterNodeResponse()

    @abort_on_error
    def ListNodes(self, request: epb.ListNodesRequest, context: Call) -> epb.ListNodesResponse:
        nodes = [
            epb.NodeInfo(
                node_id=node.node_id,
                fingerprint=node.fingerprint,
                online=node.online,
                last_seen=node.last_seen,
                registered_at=node.registered_at,
            )
            for node in self._state.list_nodes()
        ]
        return epb.ListNodesResponse(nodes=nodes, now=time.time())

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
