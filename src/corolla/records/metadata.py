"""What a `Message` carries besides its content: `Metadata`, `Error`, codes and types."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from corolla.common.errors import InvalidArgument

DEFAULT_TTL = 43200.0  # seconds a message may wait for delivery and reply (12 h)


class MessageType:
    """Base message types; ``"<base>.<name>"`` (e.g. ``train.fedprox``) selects a named handler."""

    TRAIN = "train"
    EVALUATE = "evaluate"
    QUERY = "query"
    SYSTEM = "system"

    def __new__(cls) -> MessageType:
        raise TypeError("MessageType holds constants; it is not instantiated")


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
    """Codes carried by `Error` replies: Flower's numbers, then Corolla's own from 100."""

    UNKNOWN = 0
    LOAD_CLIENT_APP_EXCEPTION = 1
    CLIENT_APP_RAISED_EXCEPTION = 2
    MESSAGE_UNAVAILABLE = 3
    REPLY_MESSAGE_UNAVAILABLE = 4
    NODE_UNAVAILABLE = 5
    MOD_FAILED_PRECONDITION = 6
    INVALID_FAB = 7
    # A message whose TTL ran out before its reply came: Flower answers those with
    # REPLY_MESSAGE_UNAVAILABLE, so this is the same code under Corolla's name.
    TTL_EXPIRED = REPLY_MESSAGE_UNAVAILABLE
    INVALID_REPLY = 101  # a handler returned something that is not a reply to the message
    RUN_STOPPED = 102  # the run finished before the message was handled

    def __new__(cls) -> ErrorCode:
        raise TypeError("ErrorCode holds constants; it is not instantiated")


class Error:
    """Why a message could not be handled: a numeric `ErrorCode` and an optional reason.

    Immutable. A missing reason and an empty one compare equal (the wire has no difference).
    """

    __slots__ = ("_code", "_reason")

    def __init__(self, code: int, reason: str | None = None) -> None:
        self._code = int(code)
        self._reason = reason

    @property
    def code(self) -> int:
        return self._code

    @property
    def reason(self) -> str | None:
        return self._reason

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Error):
            return NotImplemented
        return (self._code, self._reason or "") == (other._code, other._reason or "")

    def __hash__(self) -> int:
        return hash((self._code, self._reason or ""))

    def __repr__(self) -> str:
        return f"Error(code={self._code}, reason={self._reason!r})"


@dataclass
class Metadata:
    """Routing and bookkeeping of a `Message`, in Flower's field order.

    ``run_id`` and ``src_node_id`` are set on push. ``src_task_id``, ``dst_task_id`` and
    ``delivered_at`` exist for Flower apps that read them; Corolla routes by node and does
    not send them.
    """

    run_id: int
    message_id: str
    src_node_id: int
    dst_node_id: int
    reply_to_message_id: str
    group_id: str
    created_at: float
    ttl: float
    message_type: str
    src_task_id: int | None = None
    dst_task_id: int | None = None
    delivered_at: str = field(default="", init=False)


def _checked(name: str, check: Callable[[Any], bool], kind: str, default: Any) -> property:
    """A settable property over ``_<name>`` (``default`` until set) that refuses values other
    than ``kind``."""
    private = f"_{name}"

    def get(self: Metadata) -> Any:
        return self.__dict__.get(private, default)

    def set_(self: Metadata, value: Any) -> None:
        if not check(value):
            raise TypeError(f"Metadata.{name} must be {kind}, got {type(value).__name__}")
        self.__dict__[private] = value

    return property(get, set_, doc=f"{kind}; checked when set")


def _task_id(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


# Flower has these three as properties. Set after the dataclass is made, so that its generated
# __init__, __eq__, __repr__ and dataclasses.replace go through them like plain fields (the
# ignores: mypy sees a property assigned over a field of the same type).
_INT_OR_NONE = "an int or None"
Metadata.src_task_id = _checked("src_task_id", _task_id, _INT_OR_NONE, None)  # type: ignore[assignment]
Metadata.dst_task_id = _checked("dst_task_id", _task_id, _INT_OR_NONE, None)  # type: ignore[assignment]
Metadata.delivered_at = _checked("delivered_at", lambda v: isinstance(v, str), "a str", "")  # type: ignore[assignment]
