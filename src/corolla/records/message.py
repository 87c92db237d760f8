"""`Message`: what travels between a ServerApp and ClientApps, with `Metadata` and `Error`."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from corolla.common.errors import InvalidArgument
from corolla.records._inflatable import ArrayPayload, add_head, body_of, payload_buffers, sha256_hex
from corolla.records.metadata import (
    DEFAULT_TTL,
    Error,
    ErrorCode,
    MessageType,
    Metadata,
    validate_message_type,
)
from corolla.records.recorddict import RecordDict

log = logging.getLogger(__name__)
_warned: set[str] = set()


def new_message_id() -> str:
    return uuid.uuid4().hex


class Message:
    """Content (a `RecordDict`) or an `Error`, plus `Metadata`.

    - ``Message(content, dst_node_id, message_type, ttl=..., group_id=...)`` builds a new
      message (server side).
    - ``Message(content, reply_to=msg)`` or ``Message(error, reply_to=msg)`` builds a reply:
      run, group and type are inherited, source and destination swapped, the TTL is what is
      left of the original's (or ``ttl=`` if shorter).
    Content and error may also be given by name (``content=``, ``error=``). ``metadata=`` is
    for rebuilding a received message as it was (see `restore_message`).
    """

    def __init__(
        self,
        *args: Any,
        dst_node_id: int | None = None,
        message_type: str | None = None,
        content: RecordDict | None = None,
        error: Error | None = None,
        ttl: float | None = None,
        group_id: str | None = None,
        dst_task_id: int | None = None,
        reply_to: Message | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        if len(args) > 3:
            raise TypeError("Message() takes at most 3 positional arguments")
        content, error = _content_or_error(args[0] if args else None, content, error)
        if len(args) > 1:
            dst_node_id = _once("dst_node_id", dst_node_id, args[1])
        if len(args) > 2:
            message_type = _once("message_type", message_type, args[2])
        self._content, self._error = content, error
        if metadata is not None:
            if not isinstance(metadata, Metadata):
                raise TypeError(f"metadata must be Metadata, got {type(metadata).__name__}")
            routing = (dst_node_id, message_type, ttl, group_id, dst_task_id, reply_to)
            if any(value is not None for value in routing):
                raise TypeError("a Message built from metadata= takes no routing arguments")
            self._metadata = metadata
        elif reply_to is not None:
            if not isinstance(reply_to, Message):
                raise TypeError(f"reply_to must be a Message, got {type(reply_to).__name__}")
            inherited = (dst_node_id, message_type, group_id, dst_task_id)
            if any(value is not None for value in inherited):
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
                created_at=time.time(),
                ttl=_check_ttl(DEFAULT_TTL if ttl is None else ttl),
                message_type=validate_message_type(message_type),
                dst_task_id=dst_task_id,
            )

    @property
    def metadata(self) -> Metadata:
        return self._metadata

    @property
    def content(self) -> RecordDict:
        if self._content is None:
            raise ValueError("this message carries an error, not content (check has_content())")
        return self._content

    @content.setter
    def content(self, value: RecordDict) -> None:
        if not isinstance(value, RecordDict):
            raise TypeError(f"content must be a RecordDict, got {type(value).__name__}")
        if self._error is not None:
            raise ValueError("a message carrying an error cannot take content")
        self._content = value

    @property
    def error(self) -> Error:
        if self._error is None:
            raise ValueError("this message carries content, not an error (check has_error())")
        return self._error

    @error.setter
    def error(self, value: Error) -> None:
        if not isinstance(value, Error):
            raise TypeError(f"error must be an Error, got {type(value).__name__}")
        if self._content is not None:
            raise ValueError("a message carrying content cannot take an error")
        self._error = value

    def has_content(self) -> bool:
        return self._content is not None

    def has_error(self) -> bool:
        return self._error is not None

    def create_reply(self, content: RecordDict, ttl: float | None = None) -> Message:
        """Deprecated (as in Flower): the same as ``Message(content, reply_to=self, ttl=ttl)``."""
        _warn_once(
            "create_reply",
            "Message.create_reply is deprecated: use Message(content, reply_to=message)",
        )
        return Message(content, reply_to=self, ttl=ttl)

    def create_error_reply(self, error: Error, ttl: float | None = None) -> Message:
        """Deprecated (as in Flower): the same as ``Message(error, reply_to=self, ttl=ttl)``."""
        _warn_once(
            "create_error_reply",
            "Message.create_error_reply is deprecated: use Message(error, reply_to=message)",
        )
        return Message(error, reply_to=self, ttl=ttl)

    def expired(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return now > self._metadata.created_at + self._metadata.ttl

    # -- inflatable object ---------------------------------------------------------------------
    @property
    def object_id(self) -> str:
        """The sha256 hex digest of `deflate` (computed each time: metadata may change)."""
        return sha256_hex(self.deflate())

    @property
    def is_dirty(self) -> bool:
        """Always true: metadata and content may change at any time, so the id is recomputed."""
        return True

    @property
    def children(self) -> dict[str, ArrayPayload] | None:
        """The payloads of the content's large arrays, by data id (None for an error)."""
        return None if self._content is None else self._content.children

    def deflate(self) -> bytes:
        """The message as it travels (metadata, content or error; large arrays by reference).
        Task ids and ``delivered_at`` stay behind: Corolla does not send them."""
        from corolla.records import serde

        body = serde.message_to_proto(self).SerializeToString(deterministic=True)
        return add_head("Message", body)

    @classmethod
    def inflate(
        cls, object_content: bytes, children: Mapping[str, object] | None = None
    ) -> Message:
        from corolla.proto.v1 import message_pb2 as mpb
        from corolla.records import serde

        proto = mpb.Message.FromString(body_of(object_content, "Message"))
        refs = serde.record_dict_refs(proto.content) if proto.HasField("content") else []
        return serde.message_from_proto(proto, payload_buffers(children, refs))

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
    return Message(metadata=metadata, content=content, error=error)


def _warn_once(name: str, text: str) -> None:
    if name not in _warned:
        _warned.add(name)
        log.warning(text)


def _once(name: str, keyword: Any, positional: Any) -> Any:
    if keyword is not None:
        raise TypeError(f"Message() got {name} both by position and by name")
    return positional


def _content_or_error(
    first: Any, content: RecordDict | None, error: Error | None
) -> tuple[RecordDict | None, Error | None]:
    """Exactly one of content and error, from the first positional argument or by name."""
    if sum(value is not None for value in (first, content, error)) != 1:
        raise TypeError("a Message carries exactly one of content or error")
    if first is not None:
        if isinstance(first, Error):
            error = first
        else:
            content = first
    if content is not None and not isinstance(content, RecordDict):
        raise TypeError(f"content must be a RecordDict, got {type(content).__name__}")
    if error is not None and not isinstance(error, Error):
        raise TypeError(f"error must be an Error, got {type(error).__name__}")
    return content, error


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
        created_at=now,
        ttl=max(remaining, 1e-3),
        message_type=original.message_type,
        src_task_id=original.dst_task_id,
        dst_task_id=original.src_task_id,
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
