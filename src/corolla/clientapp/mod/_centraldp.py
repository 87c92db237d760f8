"""Client-side clipping for central DP: the mods that pair with the client-side DP wrappers."""

from __future__ import annotations

import logging

from corolla.clientapp.mod._dp import (
    KEY_CLIPPING_NORM,
    KEY_NORM_BIT,
    arrays_of,
    clip_update,
    record_of,
)
from corolla.clientapp.mod._typing import ClientAppCallable
from corolla.records import ArrayRecord, Context, Error, ErrorCode, Message, MessageType

log = logging.getLogger(__name__)


def fixedclipping_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Clip the update a ``train`` handler returns to the norm the server sent.

    Pairs with `DifferentialPrivacyClientSideFixedClipping`, which puts ``clipping_norm`` in the
    train config. The update is the reply's arrays minus the arrays received; if its L2 norm
    exceeds the clipping norm it is scaled down to it. Other message types pass through. A
    message or reply that does not hold exactly one ArrayRecord (and the message one
    ConfigRecord with ``clipping_norm``) gets an error reply. Put it last among mods that change
    the arrays, so that what it clips is what is sent.
    """
    return _clip_reply("fixedclipping_mod", msg, ctxt, call_next, adaptive=False)


def adaptiveclipping_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """`fixedclipping_mod` for `DifferentialPrivacyClientSideAdaptiveClipping`: also reports
    in the reply's (single) MetricRecord ``norm_bit`` = 1 if the update was clipped, else 0,
    from which the server adapts the clipping norm."""
    return _clip_reply("adaptiveclipping_mod", msg, ctxt, call_next, adaptive=True)


def _clip_reply(
    name: str, msg: Message, ctxt: Context, call_next: ClientAppCallable, *, adaptive: bool
) -> Message:
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, ctxt)
    sent = single_array_record(name, msg, "message")
    if isinstance(sent, Message):
        return sent
    clipping_norm = _clipping_norm(name, msg)
    if isinstance(clipping_norm, Message):
        return clipping_norm
    reply = call_next(msg, ctxt)
    if reply.has_error():
        return reply
    found = matching_reply_record(name, msg, reply, sent)
    if isinstance(found, Message):
        return found
    key, received = found
    metrics = reply.content.metric_records
    if adaptive and len(metrics) != 1:
        return refuse(
            msg, f"{name} expects exactly one MetricRecord in the reply, found {len(metrics)}"
        )
    clipped, was_clipped = clip_update(
        arrays_of(received), [sent[k].view() for k in received], clipping_norm
    )
    if was_clipped:
        reply.content[key] = record_of(list(received), clipped)
    log.info(
        "%s: update %s norm %.4f", name, "clipped to" if was_clipped else "within", clipping_norm
    )
    if adaptive:
        reply.content[next(iter(metrics))][KEY_NORM_BIT] = int(was_clipped)
    return reply


def single_array_record(name: str, msg: Message, where: str) -> ArrayRecord | Message:
    """The one ArrayRecord of ``msg``, or an error reply to it."""
    records = msg.content.array_records
    if len(records) != 1:
        return refuse(
            msg, f"{name} expects exactly one ArrayRecord in the {where}, found {len(records)}"
        )
    return next(iter(records.values()))


def matching_reply_record(
    name: str, msg: Message, reply: Message, sent: ArrayRecord
) -> tuple[str, ArrayRecord] | Message:
    """The reply's one ArrayRecord (with its key) if it holds the arrays ``sent`` held, by name
    and shape; else an error reply to ``msg``."""
    records = reply.content.array_records
    if len(records) != 1:
        return refuse(
            msg, f"{name} expects exactly one ArrayRecord in the reply, found {len(records)}"
        )
    key, received = next(iter(records.items()))
    if set(received) != set(sent):
        return refuse(
            msg,
            f"{name} expects the reply's arrays to have the names of those received: "
            f"got {sorted(received)}, received {sorted(sent)}",
        )
    for k, array in received.items():
        if array.shape != sent[k].shape:
            return refuse(
                msg, f"{name}: array {k!r} has shape {array.shape}, received {sent[k].shape}"
            )
    return key, received


def _clipping_norm(name: str, msg: Message) -> float | Message:
    configs = msg.content.config_records
    if len(configs) != 1:
        return refuse(
            msg, f"{name} expects exactly one ConfigRecord in the message, found {len(configs)}"
        )
    config = next(iter(configs.values()))
    if KEY_CLIPPING_NORM not in config:
        return refuse(
            msg,
            f"{name} needs {KEY_CLIPPING_NORM!r} in the message's ConfigRecord: use a client-side "
            "DP wrapper (DifferentialPrivacyClientSide*Clipping) in the ServerApp",
        )
    value = config[KEY_CLIPPING_NORM]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return refuse(
            msg, f"{name}: {KEY_CLIPPING_NORM!r} must be a positive number, got {value!r}"
        )
    return float(value)


def refuse(msg: Message, reason: str) -> Message:
    """Log ``reason`` and return it as an error reply to ``msg``."""
    log.error("%s", reason)
    return Message(error=Error(ErrorCode.MOD_FAILED_PRECONDITION, reason), reply_to=msg)
