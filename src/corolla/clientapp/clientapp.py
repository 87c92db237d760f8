"""`ClientApp`: user handlers for train/evaluate/query messages, dispatched by message type,
wrapped in mods (``(message, context, call_next) -> reply``) and a lifespan."""

from __future__ import annotations

import contextlib
import logging
import re
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from corolla.common.errors import InvalidArgument
from corolla.records import Context, Error, ErrorCode, Message, MessageType
from corolla.records.metadata import validate_message_type

ClientAppCallable = Callable[[Message, Context], Message]
Handler = ClientAppCallable
Mod = Callable[[Message, Context, ClientAppCallable], Message]
LifespanFn = Callable[[Context], Iterator[None]]

DEFAULT_ACTION = "default"  # ``@app.train()`` handles ``train`` (the same as ``train.default``)

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

    ``@app.train("fedprox")`` handles messages of type ``train.fedprox``; ``@app.train()``
    handles ``train`` (also written ``train.default``). Calling the app with a message returns
    the reply; a message nobody handles, or a handler that raises or returns something other
    than a reply, gives an error reply instead of an exception. A handler's traceback is logged
    in full the first time; the same error again is logged in one line.

    ``mods`` wrap every handler, the first outermost; a handler's own ``mods=`` run inside
    them. A mod gets ``(message, context, call_next)`` and returns the reply, usually
    ``call_next(message, context)``'s. ``@app.lifespan()`` registers a generator function of
    the context: the part before its ``yield`` runs before each message is handled, the rest
    after. A mod or lifespan that raises gives an error reply, like a raising handler.

    ``client_fn`` (Flower's legacy Client API) is not supported: a `ValueError` says so.
    """

    def __init__(
        self,
        client_fn: Callable[[Context], Any] | None = None,
        mods: list[Mod] | None = None,
    ) -> None:
        if client_fn is not None:
            raise InvalidArgument(
                "ClientApp(client_fn=...) is Flower's legacy Client/NumPyClient API, which "
                "Corolla does not provide: register message handlers with @app.train(), "
                "@app.evaluate() and @app.query() instead"
            )
        self._mods = _checked_mods(mods)
        self._handlers: dict[str, ClientAppCallable] = {}  # message type -> handler in its mods
        self._lifespan: LifespanFn | None = None
        self._raised: dict[str, int] = {}  # error signature -> times seen

    def _register(
        self, category: str, action: str | None, mods: list[Mod] | None
    ) -> Callable[[Handler], Handler]:
        if action is None or action == DEFAULT_ACTION:
            message_type = category
        else:
            message_type = validate_message_type(f"{category}.{action}")
        chain = self._mods + _checked_mods(mods)

        def decorator(handler: Handler) -> Handler:
            if message_type in self._handlers:
                raise ValueError(f"a handler for {message_type!r} is registered already")
            self._handlers[message_type] = _inside(handler, chain)
            return handler

        return decorator

    def train(
        self, action: str = DEFAULT_ACTION, *, mods: list[Mod] | None = None
    ) -> Callable[[Handler], Handler]:
        """Register the handler of ``train.<action>`` messages (``train`` for the default)."""
        return self._register(MessageType.TRAIN, action, mods)

    def evaluate(
        self, action: str = DEFAULT_ACTION, *, mods: list[Mod] | None = None
    ) -> Callable[[Handler], Handler]:
        """Register the handler of ``evaluate.<action>`` messages (``evaluate`` for the default)."""
        return self._register(MessageType.EVALUATE, action, mods)

    def query(
        self, action: str = DEFAULT_ACTION, *, mods: list[Mod] | None = None
    ) -> Callable[[Handler], Handler]:
        """Register the handler of ``query.<action>`` messages (``query`` for the default)."""
        return self._register(MessageType.QUERY, action, mods)

    def lifespan(self) -> Callable[[LifespanFn], LifespanFn]:
        """Register a generator function ``(context)`` that yields once: set-up before the
        ``yield`` runs before each message is handled, tear-down after it."""

        def decorator(fn: LifespanFn) -> LifespanFn:
            if self._lifespan is not None:
                raise ValueError("this ClientApp has a lifespan function already")
            self._lifespan = fn
            return fn

        return decorator

    @property
    def message_types(self) -> list[str]:
        return sorted(self._handlers)

    def __call__(self, message: Message, context: Context) -> Message:
        try:
            with lifespan_of(self._lifespan, context):
                return self._dispatch(message, context)
        except Exception as exc:  # the handler's own errors are replies already
            return self._error_reply(message, exc, "lifespan")

    def _dispatch(self, message: Message, context: Context) -> Message:
        message_type = message.metadata.message_type
        handler = self._handlers.get(message_type.removesuffix("." + DEFAULT_ACTION))
        if handler is None:
            known = ", ".join(self.message_types) or "none"
            return Message(  # Flower raises here, so its runtime replies with this code too
                error=Error(
                    ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                    f"ClientApp has no handler for message type {message_type!r} "
                    f"(registered: {known})",
                ),
                reply_to=message,
            )
        try:
            reply = handler(message, context)
        except Exception as exc:
            return self._error_reply(message, exc, f"handler for {message_type!r}")
        return _checked_reply(reply, message)

    def _error_reply(self, message: Message, exc: Exception, what: str) -> Message:
        text = short_traceback(exc)
        signature = error_signature(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, text)
        seen = self._raised[signature] = self._raised.get(signature, 0) + 1
        if seen == 1:
            log.warning("ClientApp %s raised:\n%s", what, text)
        else:
            log.warning(
                "ClientApp %s raised the same error again (%d times): %s",
                what,
                seen,
                error_headline(text),
            )
        return Message(error=Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, text), reply_to=message)


@contextlib.contextmanager
def lifespan_of(fn: LifespanFn | None, context: Context) -> Iterator[None]:
    """Run the lifespan function ``fn`` (if any) around the block: up to its one ``yield``
    before, the rest after, even when the block raises. `RuntimeError` if it does not yield
    exactly once."""
    if fn is None:
        yield
        return
    steps = fn(context)
    if not isinstance(steps, Iterator):
        raise RuntimeError(f"lifespan function {_name(fn)} must yield once (it is no generator)")
    try:
        next(steps)
    except StopIteration:
        raise RuntimeError(f"lifespan function {_name(fn)} returned without yielding") from None
    try:
        yield
    finally:
        try:
            next(steps)
        except StopIteration:
            pass
        else:
            raise RuntimeError(f"lifespan function {_name(fn)} must yield only once")


def _name(fn: object) -> str:
    return repr(getattr(fn, "__qualname__", fn))


def _checked_mods(mods: list[Mod] | None) -> list[Mod]:
    checked = list(mods or [])
    for mod in checked:
        if not callable(mod):
            raise TypeError(f"a mod is a function (message, context, call_next), not {mod!r}")
    return checked


def _inside(handler: ClientAppCallable, mods: list[Mod]) -> ClientAppCallable:
    """``handler`` wrapped in ``mods``, the first outermost: each mod gets the rest of the
    chain as its ``call_next``."""
    call = handler
    for mod in reversed(mods):
        call = _around(mod, call)
    return call


def _around(mod: Mod, call_next: ClientAppCallable) -> ClientAppCallable:
    def call(message: Message, context: Context) -> Message:
        return mod(message, context, call_next)

    return call


def _checked_reply(reply: object, message: Message) -> Message:
    if not isinstance(reply, Message):
        reason = f"handler returned {type(reply).__name__}, expected a Message built with reply_to="
    elif reply.metadata.reply_to_message_id != message.metadata.message_id:
        reason = "handler returned a Message that is not a reply to the received one (reply_to=)"
    else:
        return reply
    return Message(error=Error(ErrorCode.INVALID_REPLY, reason), reply_to=message)
