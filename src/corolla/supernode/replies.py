"""Error replies the SuperNode sends on behalf of a ClientApp that could not answer."""

from __future__ import annotations

from corolla.records import Error, Message, Metadata, RecordDict
from corolla.records.message import restore_message
from corolla.supernode.convert import encode_envelope
from corolla.supernode.domain import Envelope


def error_reply(message: Envelope, code: int, reason: str) -> Envelope:
    """An error reply to ``message`` (only its routing fields are read)."""
    metadata = Metadata(
        run_id=message.run_id,
        message_id=message.message_id,
        src_node_id=message.src_node_id,
        dst_node_id=message.dst_node_id,
        reply_to_message_id=message.reply_to_message_id,
        group_id=message.group_id,
        ttl=message.ttl,
        message_type=message.message_type,
        created_at=message.created_at,
    )
    received = restore_message(metadata, content=RecordDict())
    return encode_envelope(Message(error=Error(code, reason), reply_to=received))
