"""`ClientApp`: user handlers for train/evaluate/query messages, dispatched by message type."""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable

from corolla.records import Context, Error, ErrorCode, Message, MessageType
from corolla.records.message import validate_message_type

Handler = Callable[[Message, Context], Message]

log = logging.getLogger(__name__)

TRACEBACK_LINES = 12  # lines of a handler's traceback kept in an error reply


def short_traceback(exc: BaseException, lines: int = TRACEBACK_LINES) -> str:
    """The last ``lines`` lines of ``exc``'s formatted traceback."""
    text = "".join(traceback.format_exception(exc)).rstrip().splitlines()
    return "\n".join(text[-lines:])


_VARYING = [  # (pattern, replacement): parts of an error text that differ between nodes and runs
    (re.compile(r'File "[^"]*[/\\]([^"/\\]+)"'), r'File "\1"'),  # where the app is installed
    (re.compile(r"\b[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\b"), "<id>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<addr>"),
    (re.compile(r"\b[0-9a-fA-F]{16,}\b"), "<hex>"),  # hashes, object ids
    (re.compile(r"\[[0-9a-fA-F:.]*:[0-9a-fA-F:.]*\]"), "<ip>"),  # bracketed IPv6 addresses
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "<ip>"),  # IPv4 addresses
    (re.compile(r"(?<![A-Za-z_])\d+(?:\.\d+)*(?:[eE][-+]?\d+)?"), "<n>"),  # ids, ports, values
    (re.compile(r"\s+"), " "),
]
_HEADLINE_CHARS = 300


def error_signature(code: int, text: str) -> str:
    """What identifies an error regardless of where it happened: its code and its text with
    node ids, addresses, numbers, hashes and install paths blanked out."""
    for pattern, replacement in _VARYING:
        text = pattern.sub(replacement, text)
    return f"{code}:{text.strip()}"


def error_headline(text: str) -> str:
    """One line for an error text: the last non-empty line (a traceback's exception)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    headline = lines[-1] if lines else "(no reason given)"
    if len(headline) > _HEADLINE_CHARS:
        headline = headline[: _HEADLINE_CHARS - 3] + "..."
    return headline


class ClientApp:
    """Register handlers with ``@app.train()``, ``@app.evaluate()`` or ``@app.query()``.

    ``@app.train("fedprox")`` handles messages of type ``train.fedprox``. Calling the app with a
    message returns the reply; a message nobody handles, or a handler that raises or returns
    something other than a reply, gives an error reply instead of an exception. A handler's
    traceback is logged in full the first time; the same error again is logged in one line.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._raised: dict[str, int] = {}  # error signature -> times seen

    def _register(self, base: str, name: str | None) -> Callable[[Handler], Handler]:
        message_type = base if name is None else validate_message_type(f"{base}.{name}")

        def decorator(handler: Handler) -> Handler:
            if message_type in self._handlers:
                raise ValueError(f"a handler for {message_type!r} is registered already")
            self._handlers[message_type] = handler
            return handler

        return decorator

    def train(self, name: str | None = None) -> Callable[[Handler], Handler]:
        return self._register(MessageType.TRAIN, name)

    def evaluate(self, name: str | None = None) -> Callable[[Handler], Handler]:
        return self._register(MessageType.EVALUATE, name)

    def query(self, name: str | None = None) -> Callable[[Handler], Handler]:
        return self._register(MessageType.QUERY, name)

    @property
    def message_types(self) -> list[str]:
        return sorted(self._handlers)

    def __call__(self, message: Message, context: Context) -> Message:
        message_type = message.metadata.message_type
        handler = self._handlers.get(message_type)
        if handler is None:
            known = ", ".join(self.message_types) or "none"
            return Message(
                error=Error(
                    ErrorCode.UNKNOWN_MESSAGE_TYPE,
                    f"ClientApp has no handler for message type {message_type!r} "
                    f"(registered: {known})",
                ),
                reply_to=message,
            )
        try:
            reply = handler(message, context)
        except Exception as exc:
            text = short_traceback(exc)
            self._log_raised(message_type, text)
            return Message(
                error=Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, text), reply_to=message
            )
        return _checked_reply(reply, message)

    def _log_raised(self, message_type: str, text: str) -> None:
        signature = error_signature(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, text)
        seen = self._raised[signature] = self._raised.get(signature, 0) + 1
        if seen == 1:
            log.warning("ClientApp handler for %r raised:\n%s", message_type, text)
        else:
            log.warning(
                "ClientApp handler for %r raised the same error again (%d times): %s",
                message_type,
                seen,
                error_headline(text),
            )


def _checked_reply(reply: object, message: Message) -> Message:
    if not isinstance(reply, Message):
        reason = f"handler returned {type(reply).__name__}, expected a Message built with reply_to="
    elif reply.metadata.reply_to_message_id != message.metadata.message_id:
        reason = "handler returned a Message that is not a reply to the received one (reply_to=)"
    else:
        return reply
    return Message(error=Error(ErrorCode.INVALID_REPLY, reason), reply_to=message)
