"""ClientAppIo API servicer (SuperNode :9094): where `flwr-clientapp` processes get their work.

Thin: `RequestRun` needs the shared AppIo secret (isolation ``process``; in ``subprocess`` the
secret is random and known to nobody); every other call is authenticated by its run's token
(field ``token``, or call metadata for the object streams), then served from the `RunTable`;
replies and logs go to the `Outbox`. Protobuf stops here: requests become the node's records
(`domain.py`) and records become responses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc

from corolla.common.appio import check_secret
from corolla.common.grpc import abort_on_error
from corolla.common.protocol import MAX_LONG_POLL
from corolla.common.transfer import (
    TOKEN_KEY,
    add_service,
    call_metadata,
    receive_objects,
    send_objects,
)
from corolla.proto.v1 import clientappio_pb2 as cpb
from corolla.proto.v1 import objects_pb2 as opb
from corolla.supernode.convert import (
    context_from_proto,
    context_to_proto,
    envelope_from_proto,
    envelope_to_proto,
    fab_to_proto,
    run_to_proto,
)
from corolla.supernode.outbox import Outbox
from corolla.supernode.runs import RunState, RunTable

log = logging.getLogger(__name__)


def add_clientappio(server: grpc.Server, servicer: ClientAppIoServicer) -> None:
    """Register ``servicer`` on ``server`` (object RPCs pass raw frames through)."""
    add_service(server, cpb.DESCRIPTOR.services_by_name["ClientAppIo"], servicer)


class ClientAppIoServicer:
    def __init__(self, runs: RunTable, outbox: Outbox, secret: str) -> None:
        self._runs = runs
        self._outbox = outbox
        self._secret = secret

    def _run_of(self, context: grpc.ServicerContext, token: str = "") -> RunState:
        return self._runs.by_token(token or call_metadata(context).get(TOKEN_KEY, ""))

    @abort_on_error
    def RequestRun(
        self, request: cpb.ClientRequestRunRequest, context: grpc.ServicerContext
    ) -> cpb.ClientRequestRunResponse:
        check_secret(self._secret, request.secret)
        wait = min(max(request.wait_seconds, 0.0), MAX_LONG_POLL)
        handed = self._runs.hand_out(wait)
        if handed is None:
            return cpb.ClientRequestRunResponse()
        run_id, token = handed
        log.info("run %d: handed to the flwr-clientapp process at %s", run_id, context.peer())
        return cpb.ClientRequestRunResponse(run_id=run_id, token=token)

    @abort_on_error
    def Heartbeat(
        self, request: cpb.ClientHeartbeatRequest, context: grpc.ServicerContext
    ) -> cpb.ClientHeartbeatResponse:
        state = self._run_of(context, request.token)
        return cpb.ClientHeartbeatResponse(run_active=state.active)

    @abort_on_error
    def PullAppInputs(
        self, request: cpb.ClientPullAppInputsRequest, context: grpc.ServicerContext
    ) -> cpb.ClientPullAppInputsResponse:
        state = self._run_of(context, request.token)
        run, fab, app_context = self._runs.inputs(state)
        return cpb.ClientPullAppInputsResponse(
            run=run_to_proto(run), fab=fab_to_proto(fab), context=context_to_proto(app_context)
        )

    @abort_on_error
    def PullMessage(
        self, request: cpb.ClientPullMessageRequest, context: grpc.ServicerContext
    ) -> cpb.ClientPullMessageResponse:
        state = self._run_of(context, request.token)
        wait = min(max(request.wait_seconds, 0.0), MAX_LONG_POLL)
        message = self._runs.next_message(state, wait, request.token)
        active = self._runs.serves(state, request.token)  # False once it was detached
        response = cpb.ClientPullMessageResponse(run_active=active)
        if message is not None:
            response.message.CopyFrom(envelope_to_proto(message))
            response.run_active = True
        return response

    @abort_on_error
    def PushMessage(
        self, request: cpb.ClientPushMessageRequest, context: grpc.ServicerContext
    ) -> cpb.ClientPushMessageResponse:
        state = self._run_of(context, request.token)
        reply = envelope_from_proto(request.message)
        updated = context_from_proto(request.context) if request.HasField("context") else None
        objects = self._runs.complete(state, reply, updated)
        self._outbox.reply(state.run_id, reply, objects)
        return cpb.ClientPushMessageResponse()

    @abort_on_error
    def PushLogs(
        self, request: cpb.ClientPushLogsRequest, context: grpc.ServicerContext
    ) -> cpb.ClientPushLogsResponse:
        state = self._run_of(context, request.token)
        self._outbox.logs(state.run_id, list(request.lines))
        return cpb.ClientPushLogsResponse()

    @abort_on_error
    def PushObjects(
        self, request_iterator: Iterator[bytes], context: grpc.ServicerContext
    ) -> opb.PushObjectsResponse:
        state = self._run_of(context)
        return receive_objects(
            request_iterator, lambda oid, data: self._runs.store_object(state, oid, data)
        )

    @abort_on_error
    def PullObjects(
        self, request: opb.PullObjectsRequest, context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        state = self._run_of(context, request.token)
        objects = self._runs.read_objects(state, request.object_ids)

        def read(object_id: str, chunk_size: int) -> Iterator[memoryview]:
            data = objects[object_id]
            for offset in range(0, data.nbytes, chunk_size):
                yield data[offset : offset + chunk_size]

        return send_objects(objects, lambda oid: objects[oid].nbytes, read)

    @abort_on_error
    def MissingObjects(
        self, request: opb.MissingObjectsRequest, context: grpc.ServicerContext
    ) -> opb.MissingObjectsResponse:
        state = self._run_of(context, request.token)
        return opb.MissingObjectsResponse(
            object_ids=self._runs.missing_objects(state, request.object_ids)
        )
