"""Mods that log how big the messages a ClientApp receives are."""

from __future__ import annotations

import logging
import math

from corolla.clientapp.mod._typing import ClientAppCallable
from corolla.records import Context, Message

log = logging.getLogger(__name__)


def message_size_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Log the size in bytes of the message's records (keys and values), then go on."""
    size = sum(record.count_bytes() for record in msg.content.values())
    log.info("Message size: %d bytes", size)
    return call_next(msg, ctxt)


def arrays_size_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Log, per ArrayRecord of the message, how many array elements and bytes it holds, and the
    total bytes, then go on."""
    stats: dict[str, dict[str, int]] = {}
    for name, record in msg.content.array_records.items():
        elements = sum(math.prod(array.shape) for array in record.values())
        stats[name] = {"elements": elements, "bytes": record.count_bytes()}
    if stats:
        log.info("Array records: %s", stats)
    log.info("Arrays size: %d bytes in total", sum(s["bytes"] for s in stats.values()))
    return call_next(msg, ctxt)
