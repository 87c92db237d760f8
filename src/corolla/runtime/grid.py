"""`GrpcGrid`: the deployment Grid, over the SuperLink's ServerAppIo API.

While the SuperLink is away (restarting) every call is retried with capped backoff for up to
``retry_window`` seconds, so a SuperLink restart is a pause for the ServerApp, not an error.
Retrying is safe: message ids are chosen here, so a push the SuperLink stored before its answer
was lost is not stored twice; replies stay stored until the next pull acknowledges them, so a
pull whose answer was lost returns them again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import TypeVar

import grpc

from corolla.common.backoff import retry
from corolla.common.errors import CorollaError
from corolla.common.grpc import error_from_rpc
from corolla.common.objects import Buffer
from corolla.common.protocol import SERVER_NODE_ID
from corolla.common.transfer import TOKEN_KEY, ObjectClient, TransferLog
from corolla.proto.v1 import run_pb2 as rpb
from corolla.proto.v1 import serverappio_pb2 as spb
from corolla.proto.v1.serverappio_pb2_grpc import ServerAppIoStub
from corolla.records import Context, Message, RecordDict
from corolla.records.serde import user_config_from_proto
from corolla.records.wire import decode_context, decode_messages, encode_context, encode_messages
from corolla.runtime.localobjects import LocalObjects
from corolla.serverapp._run import Run, RunStatus, timestamp
from corolla.serverapp.grid import RunBoundGrid, check_outgoing, same_run

log = logging.getLogger(__name__)

SERVICE = "corolla.proto.v1.ServerAppIo"
RPC_TIMEOUT = 60.0
OBJECT_TIMEOUT = 3600.0
LONG_POLL = 10.0
MAX_LINGER = 0.05  # seconds a receive waits between polls while many replies are due
LINGER_PER_PENDING = 5e-6  # of it per reply still due (10,000 due: the whole 50 ms)
RETRY_WINDOW = 600.0

T = TypeVar("T")


class SuperLinkClient:
    """Calls on the ServerAppIo API that retry while the SuperLink is unreachable."""

    def __init__(self, channel: grpc.Channel, token: str, retry_window: float) -> None:
        self.stub = ServerAppIoStub(channel)
        self.token = token
        self.retry_window = retry_window
        self.objects = ObjectClient(channel, SERVICE, [(TOKEN_KEY, token)])

    def call(self, what: str, attempt: Callable[[], T]) -> T:
        """``attempt()`` (a gRPC call), retried for up to the retry window; failures come out
        as `CorollaError`."""

        def once() -> T:
            try:
                return attempt()
            except grpc.RpcError as exc:
                raise error_from_rpc(exc) from exc

        def note(made: int, exc: CorollaError, delay: float) -> None:
            log.warning(
                "%s: SuperLink unreachable (%s); retrying in %.1f s (for up to %g s)",
                what,
                exc,
                delay,
                self.retry_window,
            )

        return retry(once, timeout=self.retry_window, on_retry=note)


def run_from_proto(proto: rpb.Run) -> Run:
    """The SuperLink's description of a run, as a ServerApp sees it (`Run`)."""
    return Run(
        run_id=proto.run_id,
        fab_id=proto.fab_id,
        fab_version=proto.fab_version,
        fab_hash=proto.fab_hash,
        override_config=user_config_from_proto(proto.override_config),
        pending_at=timestamp(proto.pending_at),
        starting_at=timestamp(proto.starting_at),
        running_at=timestamp(proto.running_at),
        finished_at=timestamp(proto.finished_at),
        status=RunStatus(
            status=proto.status.status,
            sub_status=proto.status.sub_status,
            details=proto.status.details,
        ),
        flwr_aid=proto.owner,
        federation=proto.federation,
    )


class GrpcGrid(RunBoundGrid):
    """``run`` is what the SuperLink says of the run (asked once, on first use), unless the
    runtime gave it (``run=``, or `set_run`)."""

    def __init__(
        self,
        channel: grpc.Channel,
        token: str,
        run_id: int,
        *,
        retry_window: float = RETRY_WINDOW,
        client: SuperLinkClient | None = None,
        run: Run | None = None,
        object_dir: str = "",
        staging_dir: str = "",
    ) -> None:
        self._link = client or SuperLinkClient(channel, token, retry_window)
        # The SuperLink's checked object files, and where it takes in the objects we push,
        # when it shares them (its own child).
        self._local = LocalObjects(Path(object_dir)) if object_dir else None
        self._staging = LocalObjects(Path(staging_dir)) if staging_dir else None
        self._stub = self._link.stub
        self._token = token
        self._run_id = run_id
        self._run = None if run is None else same_run(run_id, run)
        self._unacked: list[str] = []  # replies received, to acknowledge on the next pull
        self._saved_here = False  # a checkpoint this process saved is not resumed from

    def describe_run(self) -> Run:
        """The run as the SuperLink describes it (asked once, on first use of `run`)."""
        request = rpb.GetRunRequest(run_id=self._run_id, token=self._token)
        reply = self._link.call("GetRun", lambda: self._stub.GetRun(request, timeout=RPC_TIMEOUT))
        return run_from_proto(reply.run)

    def get_node_ids(self) -> list[int]:
        request = spb.GetNodesRequest(run_id=self._run_id, token=self._token)
        reply = self._link.call(
            "GetNodes", lambda: self._stub.GetNodes(request, timeout=RPC_TIMEOUT)
        )
        return list(reply.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        batch = check_outgoing(messages)
        if not batch:
            return []
        for message in batch:
            message.metadata.run_id = self._run_id
            message.metadata.src_node_id = SERVER_NODE_ID
        protos, objects = encode_messages(batch)
        self._push_objects(objects)
        request = spb.PushMessagesRequest(run_id=self._run_id, token=self._token, messages=protos)
        reply = self._link.call(
            "PushMessages", lambda: self._stub.PushMessages(request, timeout=RPC_TIMEOUT)
        )
        return list(reply.message_ids)

    def _push_objects(self, objects: dict[str, Buffer]) -> None:
        ids = {"token": self._token}

        def push() -> int:  # a long push shows its progress in the run's log
            progress = TransferLog(f"pushing {len(objects)} objects to the SuperLink", log)
            stage = None if self._staging is None else partial(self._stage, objects)
            return self._link.objects.push(
                objects, ids=ids, timeout=OBJECT_TIMEOUT, progress=progress, stage=stage
            )

        self._link.call("PushObjects", push)

    def _stage(self, objects: dict[str, Buffer], lacking: list[str]) -> None:
        """Put the objects the SuperLink lacks in its staging directory (it takes them in
        when asked again); any that cannot be put there are pushed as usual."""
        assert self._staging is not None  # only called with one
        try:
            self._staging.place({oid: objects[oid] for oid in lacking})
        except CorollaError as exc:
            log.debug("staging objects failed (%s): pushing them", exc)

    def _pull(self, message_ids: list[str], wait: float) -> list[Message]:
        request = spb.PullMessagesRequest(
            run_id=self._run_id,
            token=self._token,
            message_ids=message_ids,
            wait_seconds=wait,
            ack_message_ids=self._unacked,
        )
        reply = self._link.call(
            "PullMessages",
            lambda: self._stub.PullMessages(request, timeout=wait + RPC_TIMEOUT),
        )
        # The SuperLink drops acknowledged replies before it selects, so a reply comes twice
        # only if our acknowledgement never arrived: skip those of the last batch.
        seen = set(self._unacked)
        fresh = [m for m in reply.messages if m.metadata.message_id not in seen]
        messages = decode_messages(fresh, self._fetch)
        self._unacked = [m.metadata.message_id for m in reply.messages]
        return messages

    def _fetch(self, object_ids: list[str]) -> dict[str, Buffer]:
        found: dict[str, Buffer] = {}
        if self._local is not None:
            found.update(self._local.read(object_ids))
        rest = [oid for oid in object_ids if oid not in found]
        if not rest:
            return found
        ids = {"token": self._token}
        pulled = self._link.call(
            "PullObjects",
            lambda: self._link.objects.pull(  # trusted hop, see common/transfer.py
                rest, ids=ids, timeout=OBJECT_TIMEOUT, verify=False
            ),
        )
        return found | pulled

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return self._pull(list(message_ids), 0.0)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        return super().send_and_receive(messages, timeout=timeout)

    def receive(
        self, message_ids: Iterable[str], timeout: float | None = None
    ) -> Iterator[Message]:
        """Long-poll the SuperLink: each reply is yielded the moment it arrives."""
        pending = dict.fromkeys(message_ids)  # in order; each reply's removal costs O(1)
        deadline = None if timeout is None else time.monotonic() + timeout
        linger = 0.0
        while pending:
            time.sleep(linger)
            remaining = LONG_POLL if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return
            batch = self._pull(list(pending), min(remaining, LONG_POLL))
            # More to come: let replies gather a moment before the next poll (a poll for
            # thousands of ids costs the SuperLink far more than the few that came since).
            more = bool(batch) and len(pending) > len(batch)
            linger = min(MAX_LINGER, len(pending) * LINGER_PER_PENDING) if more else 0.0
            batch.reverse()
            while batch:  # handed over one by one: a reply folded in is not held here
                reply = batch.pop()
                pending.pop(reply.metadata.reply_to_message_id, None)
                yield reply
                del reply

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, server_round: int, checkpoint: RecordDict) -> None:
        envelope = Context(run_id=self._run_id, node_id=SERVER_NODE_ID, state=checkpoint)
        proto, objects = encode_context(envelope)
        self._push_objects(objects)
        request = spb.PushCheckpointRequest(
            run_id=self._run_id, token=self._token, server_round=server_round, checkpoint=proto
        )
        self._link.call(
            "PushCheckpoint", lambda: self._stub.PushCheckpoint(request, timeout=RPC_TIMEOUT)
        )
        self._saved_here = True

    def load_checkpoint(self) -> tuple[int, RecordDict] | None:
        if self._saved_here:
            return None
        request = spb.PullCheckpointRequest(run_id=self._run_id, token=self._token)
        reply = self._link.call(
            "PullCheckpoint", lambda: self._stub.PullCheckpoint(request, timeout=RPC_TIMEOUT)
        )
        if not reply.server_round:
            return None
        return reply.server_round, decode_context(reply.checkpoint, self._fetch).state
