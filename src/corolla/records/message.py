"""`Message`: what travels between a ServerApp and ClientApps, with `Metadata` and `Error`."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import overload

from corolla.common.errors import InvalidArgument
from corolla.records.recorddict import RecordDict

DEFAULT_TTL = 43200.0  # seconds a message may wait for delivery and reply (12 h)


class MessageType:
    """Base message types; ``"<base>.<name>"`` (e.g. ``train.fedprox``) selects a named handler."""

    TRAIN = "train"
    EVALUATE = "evaluate"
    QUERY = "query"
    SYSTEM = "system"


_TYPE_RE = re.compile(r"^(train|evaluate|query)(\.[A-Za-z_][A-Za-z0-9_\-]*)?$")


def validate_message_type(message_type: str) -> str:
    """Return ``message_type`` if valid, else raise `InvalidArgument`."""
    if not isinstance(message_type, str) or not _TYPE_RE.fullmatch(message_type):
        raise InvalidArgument(
            f"invalid message_type {message_type!r}: use 'train', 'evaluate' or 'query', "
            "optionally followed by '.<name>' (e.g. 'train.fedprox')"
        )
    return message_type


class ErrorCode:
    """Codes carried by `Error` replies."""

    UNKNOWN = 0
    CLIENT_APP_RAISED_EXCEPTION = 1
    UNKNOWN_MESSAGE_TYPE = 2
    INVALID_REPLY = 3
    MESSAGE_UNAVAILABLE = 4
    NODE_UNAVAILABLE = 5
    TTL_EXPIRED = 6
    LOAD_CLIENT_APP_EXCEPTION = 7
    RUN_STOPPED = 8


@dataclass(frozen=True)
class Error:
    """Why a message could not be handled: a numeric `ErrorCode` and a human-readable reason."""

    code: int
    reason: str = ""


@dataclass
class Metadata:
    """Routing and bookkeeping of a `Message`. ``run_id`` and ``src_node_id`` are set on push."""

    run_id: int
    message_id: str
    src_node_id: int
    dst_node_id: int
    reply_to_message_id: str
    group_id: str
    ttl: float
    message_type: str
    created_at: float = field(default_factory=time.time)


def new_message_id() -> str:
    return uuid.uuid4().hex


class Message:
    """Content (a `RecordDict`) or an `Error`, plus `Metadata`.

    - ``Message(content, dst_node_id=..., message_type=...)`` builds a new message (server side).
    - ``Message(content, reply_to=msg)`` or ``Message(error=..., reply_to=msg)`` builds a reply:
      run, group and type are inherited, source and destination swapped, the TTL is what is left.
    """

    @overload
    def __init__(
        self,
        content: RecordDict,
        dst_node_id: int,
        message_type: str,
        *,
        ttl: float | None = None,
        group_id: str | None = None,
    ) -> None: ...

    @overload
    def __init__(self, content: RecordDict, *, reply_to: Message) -> None: ...

    @overload
    def __init__(self, *, error: Error, reply_to: Message) -> None: ...

    def __init__(
        self,
        content: RecordDict | None = None,
        dst_node_id: int | None = None,
        message_type: str | None = None,
        *,
        ttl: float | None = None,
        group_id: str | None = None,
        error: Error | None = None,
        reply_to: Message | None = None,
    ) -> None:
        if (content is None) == (error is None):
            raise TypeError("a Message carries exactly one of content= or error=")
        if content is not None and not isinstance(content, RecordDict):
            raise TypeError(f"content must be a RecordDict, got {type(content).__name__}")
        self._content = content
        self._error = error
        if reply_to is not None:
            if dst_node_id is not None or message_type is not None or group_id is not None:
                raise TypeError("a reply inherits dst_node_id, message_type and group_id")
            self._metadata = _reply_metadata(reply_to.metadata, ttl)
        else:
            if dst_node_id is None or message_type is None:
                raise TypeError("a new Message needs dst_node_id and message_type (or reply_to=)")
            if error is not None:
                raise TypeError("only a reply (reply_to=) can carry an error")
            self._metadata = Metadata(
                run_id=0,
                message_id=new_message_id(),
                src_node_id=0,
                dst_node_id=int(dst_node_id),
                reply_to_message_id="",
                group_id=group_id or "",
                ttl=_check_ttl(DEFAULT_TTL if ttl is None else ttl),
                message_type=validate_message_type(message_type),
            )

    @property
    def metadata(self) -> Metadata:
        return self._metadata

    @property
    def content(self) -> RecordDict:
        if self._content is None:
            raise ValueError("this message carries an error, not content (check has_error())")
        return self._content

    @content.setter
    def content(self, value: RecordDict) -> None:
        if not isinstance(value, RecordDict):
            raise TypeError(f"content must be a RecordDict, got {type(value).__name__}")
        self._content, self._error = value, None

    @property
    def error(self) -> Error:
        if self._error is None:
            raise ValueError("this message carries content, not an error (check has_error())")
        return self._error

    def has_content(self) -> bool:
        return self._content is not None

    def has_error(self) -> bool:
        return self._error is not None

    def expired(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return now > self._metadata.created_at + self._metadata.ttl

    def __repr__(self) -> str:
        md = self._metadata
        body = f"error={self._error!r}" if self._error else f"content={self._content!r}"
        return (
            f"Message(type={md.message_type!r}, id={md.message_id}, run={md.run_id}, "
            f"{md.src_node_id}->{md.dst_node_id}, {body})"
        )


def restore_message(
    metadata: Metadata, *, content: RecordDict | None = None, error: Error | None = None
) -> Message:
    """Rebuild a received message from its parts, keeping its metadata as it is."""
    if (content is None) == (error is None):
        raise InvalidArgument("a Message carries exactly one of content or error")
    message = Message.__new__(Message)
    message._metadata, message._content, message._error = metadata, content, error
    return message


def _check_ttl(ttl: float) -> float:
    if not ttl > 0:
        raise InvalidArgument(f"ttl must be positive, got {ttl}")
    return float(ttl)


def _reply_metadata(original: Metadata, ttl: float | None) -> Metadata:
    now = time.time()
    remaining = min(original.created_at + original.ttl - now, original.ttl)
    if ttl is not None:
        remaining = min(remaining, _check_ttl(ttl))
    return Metadata(
        run_id=original.run_id,
        message_id=new_message_id(),
        src_node_id=original.dst_node_id,
        dst_node_id=original.src_node_id,
        reply_to_message_id=original.message_id,
        group_id=original.group_id,
        ttl=max(remaining, 1e-3),
        message_type=original.message_type,
        created_at=now,
    )


__all__ = [
    "DEFAULT_TTL",
    "Error",
    "ErrorCode",
    "Message",
    "MessageType",
    "Metadata",
    "validate_message_type",
]
