"""`ClientApp`: user handlers for train/evaluate/query messages, dispatched by message type."""

from __future__ import annotations

import logging
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


class ClientApp:
    """Register handlers with ``@app.train()``, ``@app.evaluate()`` or ``@app.query()``.

    ``@app.train("fedprox")`` handles messages of type ``train.fedprox``. Calling the app with a
    message returns the reply; a message nobody handles, or a handler that raises or returns
    something other than a reply, gives an error reply instead of an exception.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

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
            log.warning("ClientApp handler for %r raised %s", message_type, type(exc).__name__)
            return Message(
                error=Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, short_traceback(exc)),
                reply_to=message,
            )
        return _checked_reply(reply, message)


def _checked_reply(reply: object, message: Message) -> Message:
    if not isinstance(reply, Message):
        reason = f"handler returned {type(reply).__name__}, expected a Message built with reply_to="
    elif reply.metadata.reply_to_message_id != message.metadata.message_id:
        reason = "handler returned a Message that is not a reply to the received one (reply_to=)"
    else:
        return reply
    return Message(error=Error(ErrorCode.INVALID_REPLY, reason), reply_to=message)
