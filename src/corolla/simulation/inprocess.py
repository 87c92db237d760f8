"""`InProcessGrid`: drives a set of ClientApps in this process, for tests and quick trials.

Every message, reply and checkpoint goes through the wire encoding, so an app that works here
sends only what can really travel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from corolla.clientapp import ClientApp
from corolla.common.errors import InvalidArgument
from corolla.common.objects import assemble, encode_chunks
from corolla.common.protocol import SERVER_NODE_ID
from corolla.proto.v1 import message_pb2, records_pb2
from corolla.records import Context, Message, RecordDict, UserConfig
from corolla.records.serde import (
    large_arrays,
    message_from_proto,
    message_to_proto,
    record_dict_from_proto,
    record_dict_to_proto,
)
from corolla.serverapp._run import local_run
from corolla.serverapp.grid import RunBoundGrid, check_outgoing

Checkpoint = tuple[int, RecordDict]


def _frames(records: RecordDict) -> list[bytes]:
    frames: list[bytes] = []
    for object_id, array in large_arrays(records).items():
        frames.extend(encode_chunks(object_id, array.data))
    return frames


def wire_roundtrip(message: Message) -> Message:
    """``message`` after encoding and decoding, as a receiver would see it."""
    encoded = message_to_proto(message).SerializeToString()
    frames = _frames(message.content) if message.has_content() else []
    return message_from_proto(message_pb2.Message.FromString(encoded), assemble(frames))


def records_roundtrip(records: RecordDict) -> RecordDict:
    """``records`` after encoding and decoding."""
    encoded = record_dict_to_proto(records).SerializeToString()
    proto = records_pb2.RecordDict.FromString(encoded)
    return record_dict_from_proto(proto, assemble(_frames(records)))


class InProcessGrid(RunBoundGrid):
    """A `Grid` over ``num_nodes`` in-process nodes (ids 1..N) all running ``client_app``.

    Checkpoints are kept in memory (`saved_checkpoint`); pass ``checkpoint`` to start as if a
    ServerApp of this run had saved it before (a restart). `run` describes a running run with
    ``run_config`` as its overrides and no FAB (the app is in this process); `set_run` may
    replace that description with another of the same run id.
    """

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        *,
        run_id: int = 1,
        run_config: UserConfig | None = None,
        node_configs: Mapping[int, UserConfig] | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        if num_nodes < 1:
            raise InvalidArgument("num_nodes must be at least 1")
        self._app = client_app
        self._run_id = run_id
        self._run = local_run(run_id, run_config or {})
        self._contexts = {
            node_id: Context(
                run_id=run_id,
                node_id=node_id,
                node_config=dict((node_configs or {}).get(node_id, {})),
                run_config=dict(run_config or {}),
            )
            for node_id in range(1, num_nodes + 1)
        }
        self._replies: dict[str, Message] = {}
        self._checkpoint: Checkpoint | None = None
        if checkpoint is not None:
            self._checkpoint = (checkpoint[0], records_roundtrip(checkpoint[1]))
        self._saved_here = False  # a checkpoint saved by this grid is not resumed from

    def context(self, node_id: int) -> Context:
        """The context a node keeps between messages (for inspection in tests)."""
        return self._contexts[node_id]

    def get_node_ids(self) -> list[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        batch = check_outgoing(messages)
        for message in batch:
            if message.metadata.dst_node_id not in self._contexts:
                raise InvalidArgument(f"unknown destination node {message.metadata.dst_node_id}")
        ids = []
        for message in batch:
            message.metadata.run_id = self._run_id
            message.metadata.src_node_id = SERVER_NODE_ID
            received = wire_roundtrip(message)
            reply = self._app(received, self._contexts[message.metadata.dst_node_id])
            self._replies[message.metadata.message_id] = wire_roundtrip(reply)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(mid) for mid in message_ids if mid in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        return super().send_and_receive(messages, timeout=timeout)

    def save_checkpoint(self, server_round: int, checkpoint: RecordDict) -> None:
        self._checkpoint = (server_round, records_roundtrip(checkpoint))
        self._saved_here = True

    def load_checkpoint(self) -> Checkpoint | None:
        return None if self._saved_here else self._checkpoint

    @property
    def saved_checkpoint(self) -> Checkpoint | None:
        """The last checkpoint saved (for tests: hand it to a new grid to resume)."""
        return self._checkpoint
