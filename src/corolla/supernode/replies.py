"""Error replies the SuperNode sends on behalf of a ClientApp that could not answer."""

from __future__ import annotations

from corolla.proto.v1 import message_pb2 as mpb
from corolla.records import Error, Message, RecordDict
from corolla.records.message import restore_message
from corolla.records.serde import metadata_from_proto
from corolla.records.wire import encode_messages


def error_reply(message: mpb.Message, code: int, reason: str) -> mpb.Message:
    """An encoded error reply to ``message`` (only its metadata is read)."""
    received = restore_message(metadata_from_proto(message.metadata), content=RecordDict())
    protos, _ = encode_messages([Message(error=Error(code, reason), reply_to=received)])
    return protos[0]
