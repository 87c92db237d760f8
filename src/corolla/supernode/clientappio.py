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

from corolla.common.appio import AppIoAuth
from corolla.common.compression import ACCEPTED, NONE, negotiated
from corolla.common.errors import NotFound
from corolla.common.grpc import WaitSlots, abort_on_error
from corolla.common.guard import Call, Credential, Policy, add_service
from corolla.common.objectfiles import OpenObject
from corolla.common.protocol import check_wait
from corolla.common.transfer import MAX_STREAM_BYTES, receive_objects_into, send_objects
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

POLICY: Policy = {
    "RequestRun": Credential.APP_SECRET,
    "Heartbeat": Credential.RUN_TOKEN,
    "PullAppInputs": Credential.RUN_TOKEN,
    "PullMessage": Credential.RUN_TOKEN,
    "PushMessage": Credential.RUN_TOKEN,
    "PushLogs": Credential.RUN_TOKEN,
    "PushObjects": Credential.RUN_TOKEN,
    "PullObjects": Credential.RUN_TOKEN,
    "MissingObjects": Credential.RUN_TOKEN,
}


def add_clientappio(server: grpc.Server, servicer: ClientAppIoServicer) -> None:
    """Register ``servicer`` on ``server`` behind `POLICY` (object RPCs pass raw frames)."""
    auth = AppIoAuth(servicer.secret, lambda token: servicer.runs.by_token(token).run_id)
    add_service(server, cpb.DESCRIPTOR.services_by_name["ClientAppIo"], servicer, POLICY, auth)


class ClientAppIoServicer:
    def __init__(
        self,
        runs: RunTable,
        outbox: Outbox,
        secret: str,
        wait_slots: WaitSlots | None = None,
        *,
        compression: str = NONE,
    ) -> None:
        self.runs = runs
        self._outbox = outbox
        self.secret = secret
        self._slots = wait_slots or WaitSlots(48)
        self._compression = compression  # toward pullers that accept it (--compression)

    def _run_of(self, context: Call) -> RunState:
        return self.runs.by_token(context.caller.token)

    @abort_on_error
    def RequestRun(
        self, request: cpb.ClientRequestRunRequest, context: Call
    ) -> cpb.ClientRequestRunResponse:
        wait = check_wait(request.wait_seconds)
        with self._slots.hold(wait) as granted:
            handed = self.runs.hand_out(granted)
        if handed is None:
            return cpb.ClientRequestRunResponse()
        run_id, token = handed
        log.info("run %d: handed to the flwr-clientapp process at %s", run_id, context.peer())
        return cpb.ClientRequestRunResponse(run_id=run_id, token=token)

    @abort_on_error
    def Heartbeat(
        self, request: cpb.ClientHeartbeatRequest, context: Call
    ) -> cpb.ClientHeartbeatResponse:
        state = self._run_of(context)
        return cpb.ClientHeartbeatResponse(run_active=state.active)

    @abort_on_error
    def PullAppInputs(
        self, request: cpb.ClientPullAppInputsRequest, context: Call
    ) -> cpb.ClientPullAppInputsResponse:
        state = self._run_of(context)
        run, fab, app_context = self.runs.inputs(state)
        return cpb.ClientPullAppInputsResponse(
            run=run_to_proto(run),
            fab=fab_to_proto(fab),
            context=context_to_proto(app_context),
            # our own child (isolation subprocess) shares the run's object files
            object_dir="" if self.runs.attachable else str(state.objects.directory),
        )

    @abort_on_error
    def PullMessage(
        self, request: cpb.ClientPullMessageRequest, context: Call
    ) -> cpb.ClientPullMessageResponse:
        wait = check_wait(request.wait_seconds)
        state = self._run_of(context)
        with self._slots.hold(wait) as granted:
            message = self.runs.next_message(state, granted, request.token)
        active = self.runs.serves(state, request.token)  # False once it was detached
        response = cpb.ClientPullMessageResponse(run_active=active)
        if message is not None:
            response.message.CopyFrom(envelope_to_proto(message))
            response.run_active = True
        return response

    @abort_on_error
    def PushMessage(
        self, request: cpb.ClientPushMessageRequest, context: Call
    ) -> cpb.ClientPushMessageResponse:
        state = self._run_of(context)
        reply = envelope_from_proto(request.message)
        updated = context_from_proto(request.context) if request.HasField("context") else None
        objects = self.runs.complete(state, reply, updated)
        self._outbox.reply(state.run_id, reply, objects)
        return cpb.ClientPushMessageResponse()

    @abort_on_error
    def PushLogs(
        self, request: cpb.ClientPushLogsRequest, context: Call
    ) -> cpb.ClientPushLogsResponse:
        state = self._run_of(context)
        self._outbox.logs(state.run_id, list(request.lines))
        return cpb.ClientPushLogsResponse()

    @abort_on_error
    def PushObjects(
        self, request_iterator: Iterator[bytes], context: Call
    ) -> opb.PushObjectsResponse:
        state = self._run_of(context)
        return receive_objects_into(  # into the run's files; trusted hop: common/transfer.py
            request_iterator, state.objects.sink, max_stream_bytes=MAX_STREAM_BYTES, verify=False
        )

    @abort_on_error
    def PullObjects(self, request: opb.PullObjectsRequest, context: Call) -> Iterator[bytes]:
        state = self._run_of(context)
        ids = list(dict.fromkeys(request.object_ids))
        missing = state.objects.missing(ids)
        if missing:
            raise NotFound(f"unknown objects: {', '.join(missing)}")
        encoding = negotiated(self._compression, request.accept_encodings)
        return _stream_files({oid: state.objects.open(oid) for oid in ids}, encoding)

    @abort_on_error
    def MissingObjects(
        self, request: opb.MissingObjectsRequest, context: Call
    ) -> opb.MissingObjectsResponse:
        state = self._run_of(context)
        return opb.MissingObjectsResponse(
            object_ids=self.runs.missing_objects(state, request.object_ids),
            accept_encodings=ACCEPTED,
        )


def _stream_files(files: dict[str, OpenObject], encoding: str) -> Iterator[bytes]:
    """Chunk frames of opened objects (readable even if released meanwhile), then closed;
    compressed in ``encoding`` where that pays."""
    try:
        yield from send_objects(
            files,
            lambda oid: files[oid].size,
            lambda oid, n: files[oid].chunks(n),
            encoding=encoding,
        )
    finally:
        for file in files.values():
            file.close()
