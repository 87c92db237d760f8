"""`GrpcGrid`: the deployment Grid, over the SuperLink's ServerAppIo API."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import grpc

from corolla.common.grpc import error_from_rpc
from corolla.common.objects import Buffer
from corolla.common.transfer import TOKEN_KEY, ObjectClient
from corolla.proto.v1 import serverappio_pb2 as spb
from corolla.proto.v1.serverappio_pb2_grpc import ServerAppIoStub
from corolla.records import Message
from corolla.records.wire import decode_messages, encode_messages
from corolla.serverapp.grid import Grid

SERVICE = "corolla.proto.v1.ServerAppIo"
RPC_TIMEOUT = 60.0
OBJECT_TIMEOUT = 3600.0
LONG_POLL = 10.0


class GrpcGrid(Grid):
    def __init__(self, channel: grpc.Channel, token: str, run_id: int) -> None:
        self._stub = ServerAppIoStub(channel)
        self._token = token
        self._run_id = run_id
        self._objects = ObjectClient(channel, SERVICE, [(TOKEN_KEY, token)])

    @property
    def run_id(self) -> int:
        return self._run_id

    def get_node_ids(self) -> list[int]:
        request = spb.GetNodesRequest(run_id=self._run_id, token=self._token)
        try:
            return list(self._stub.GetNodes(request, timeout=RPC_TIMEOUT).node_ids)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        batch = list(messages)
        for message in batch:
            message.metadata.run_id = self._run_id
            message.metadata.src_node_id = 0
        protos, objects = encode_messages(batch)
        try:
            self._objects.push(objects, ids={"token": self._token}, timeout=OBJECT_TIMEOUT)
            request = spb.PushMessagesRequest(
                run_id=self._run_id, token=self._token, messages=protos
            )
            return list(self._stub.PushMessages(request, timeout=RPC_TIMEOUT).message_ids)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    def _pull(self, message_ids: list[str], wait: float) -> list[Message]:
        request = spb.PullMessagesRequest(
            run_id=self._run_id, token=self._token, message_ids=message_ids, wait_seconds=wait
        )
        try:
            reply = self._stub.PullMessages(request, timeout=wait + RPC_TIMEOUT)
            return decode_messages(reply.messages, self._fetch)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    def _fetch(self, object_ids: list[str]) -> dict[str, Buffer]:
        pulled = self._objects.pull(object_ids, ids={"token": self._token}, timeout=OBJECT_TIMEOUT)
        return dict(pulled)

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return self._pull(list(message_ids), 0.0)

    def receive(
        self, message_ids: Iterable[str], timeout: float | None = None
    ) -> Iterator[Message]:
        """Long-poll the SuperLink: each reply is yielded the moment it arrives."""
        import time

        pending = list(dict.fromkeys(message_ids))
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            remaining = LONG_POLL if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return
            for reply in self._pull(pending, min(remaining, LONG_POLL)):
                if reply.metadata.reply_to_message_id in pending:
                    pending.remove(reply.metadata.reply_to_message_id)
                yield reply
