"""Deny by default: every RPC of a served API names the credential it needs, and is checked here.

A service is registered with `add_service` together with its policy table (method -> the
`Credential` it needs) and an authenticator for that service. Registration refuses a table that
misses a method of the service descriptor, so a new RPC without a policy cannot be served.
Before a servicer method runs, the request is parsed here (malformed bytes are
INVALID_ARGUMENT with one log line, never a traceback) and the authenticator turns the call's
credential into a `Caller`, which the servicer reads from ``context.caller``. A refused call
never reaches the servicer. A servicer method may be a coroutine (served by a `grpc.aio`
server, `corolla.common.aioserver`): its checks then run on a thread, or on the loop when
the authenticator's ``blocking`` says they never block.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from corolla.common import errors
from corolla.common.grpc import status_for

log = logging.getLogger(__name__)

# Object RPCs carry hand-built chunk frames (`common/objects.py`): passed through as raw bytes.
RAW_METHODS = frozenset({"PushObjects", "PullObjects"})


class Credential(enum.Enum):
    """What a call must carry."""

    NODE = "node signature"  # Fleet: a SuperNode (its signed request when auth is on)
    RUN_TOKEN = "run token"  # AppIo: the per-run token handed to an app process
    APP_SECRET = "AppIo secret"  # AppIo RequestRun: the operator's shared secret
    USER = "user"  # Exec: the CLI's user (OIDC access token, else the client certificate)
    PUBLIC = "nothing"  # callable by anyone who reaches the API (Exec GetLoginDetails)


Policy = Mapping[str, Credential]


@dataclass(frozen=True)
class Caller:
    """Who a call comes from, as established by the service's authenticator."""

    credential: Credential
    node_id: int = 0  # NODE: the node
    verified: bool = False  # NODE: node_id is the one bound to the key that signed the call
    run_id: int = 0  # RUN_TOKEN: the run the token belongs to
    token: str = ""  # RUN_TOKEN: the token itself (some calls check it is still the current one)
    user: str = ""  # USER: the logged-in user, else the client certificate's subject, or ""
    roles: frozenset[str] = frozenset()  # USER: what the user may do (see superlink/access.py)


@dataclass(frozen=True)
class CallInfo:
    """What an authenticator sees of a call."""

    method: str  # full path: "/corolla.proto.v1.Fleet/PullMessages"
    request: Message | None  # parsed request; None for a client-streaming call
    raw: bytes  # the request as received (b"" for a client-streaming call)
    metadata: Mapping[str, str]
    context: grpc.ServicerContext


Authenticate = Callable[[Credential, CallInfo], Caller]


class Call:
    """The servicer's view of a call: the gRPC context plus the authenticated `caller`."""

    def __init__(
        self, context: grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any], caller: Caller
    ) -> None:
        self._context = context
        self.caller = caller

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def check_policy(service: ServiceDescriptor, policy: Policy) -> None:
    """Raise `ValueError` unless ``policy`` names a credential for exactly the methods of
    ``service``."""
    methods = {method.name for method in service.methods}
    missing = sorted(methods - set(policy))
    extra = sorted(set(policy) - methods)
    if missing or extra:
        raise ValueError(
            f"policy of {service.full_name}: no entry for {missing or 'none'}; "
            f"entries for unknown methods {extra or 'none'}"
        )


def metadata_of(context: grpc.ServicerContext) -> dict[str, str]:
    return {key: str(value) for key, value in context.invocation_metadata()}


class Handlers(Protocol):
    """What `add_service` needs of a server: a `grpc.Server` or a `corolla.common.aioserver`."""

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None: ...


def add_service(
    server: Handlers,
    service: ServiceDescriptor,
    servicer: Any,
    policy: Policy,
    authenticate: Authenticate,
) -> None:
    """Register ``servicer`` for ``service``: every call is parsed and authenticated by its
    policy entry first. Object RPCs pass frames through as raw bytes."""
    check_policy(service, policy)
    handlers = {}
    for method in service.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        raw_response = method.name in RAW_METHODS and method.server_streaming
        serialize = None if raw_response else response_cls.SerializeToString
        guarded = _guard(
            getattr(servicer, method.name),
            f"/{service.full_name}/{method.name}",
            policy[method.name],
            authenticate,
            None if method.client_streaming else request_cls,
        )
        if method.server_streaming and not inspect.iscoroutinefunction(guarded):
            guarded = _generator(guarded)
        if method.client_streaming and method.server_streaming:
            factory = grpc.stream_stream_rpc_method_handler
        elif method.client_streaming:
            factory = grpc.stream_unary_rpc_method_handler
        elif method.server_streaming:
            factory = grpc.unary_stream_rpc_method_handler
        else:
            factory = grpc.unary_unary_rpc_method_handler
        handlers[method.name] = factory(
            guarded, request_deserializer=None, response_serializer=serialize
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


def _guard(
    behaviour: Callable[[Any, Any], Any],
    path: str,
    credential: Credential,
    authenticate: Authenticate,
    request_cls: type[Message] | None,
) -> Callable[[Any, Any], Any]:
    def admit(request: Any, context: Any) -> tuple[Any, Caller]:
        """The parsed request and its caller; `CorollaError` if refused."""
        if request_cls is None:  # client streaming: frames are checked as they arrive
            info = CallInfo(path, None, b"", metadata_of(context), context)
            return request, authenticate(credential, info)
        raw = bytes(request)
        try:
            parsed = request_cls.FromString(raw)
        except (DecodeError, ValueError) as exc:
            raise errors.InvalidArgument(f"malformed request: {exc}") from exc
        _check_ids(parsed)
        info = CallInfo(path, parsed, raw, metadata_of(context), context)
        return parsed, authenticate(credential, info)

    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            parsed, caller = admit(request, context)
        except errors.CorollaError as exc:
            log.warning("%s refused for %s: %s", path, _peer(context), exc)
            context.abort(status_for(exc), str(exc))
        return behaviour(parsed, Call(context, caller))

    async def async_handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        # On an event loop (common/aioserver.py): the checks run on a thread (they may read
        # the state), unless the authenticator's ``blocking`` says they never block.
        try:
            if getattr(authenticate, "blocking", True):
                parsed, caller = await asyncio.to_thread(admit, request, context)
            else:  # it says it reads nothing that can block
                parsed, caller = admit(request, context)
        except errors.CorollaError as exc:
            log.warning("%s refused for %s: %s", path, context.peer(), exc)
            await context.abort(status_for(exc), str(exc))
        return await behaviour(parsed, Call(context, caller))

    return async_handler if inspect.iscoroutinefunction(behaviour) else handler


def _peer(context: Any) -> str:
    """The caller's address, where it is safe to ask: a plain handler of a `grpc.aio` server runs
    on a thread, where asking can crash the process (its call may be gone: a hostile-input test
    found a segfault there)."""
    if isinstance(context, _StreamContext):
        context = context.wrapped
    return (
        str(context.peer())
        if isinstance(context, grpc.ServicerContext)
        else "a caller of the event-loop server"
    )


class _Aborted(Exception):
    """A streaming call ended with a status by `_StreamContext.abort`."""


class _StreamContext:
    """A streaming call's context whose ``abort`` sets the status and ends the stream. (A
    `grpc.aio` server runs a plain streaming handler on a thread, where its own ``abort`` can
    crash the process under load: a hostile-input test found a segfault there.)"""

    def __init__(self, context: Any) -> None:
        self.wrapped = context

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.wrapped.set_code(code)
        self.wrapped.set_details(details)
        raise _Aborted(details)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def _generator(handler: Callable[[Any, Any], Iterator[Any]]) -> Callable[[Any, Any], Any]:
    """``handler`` as a generator function: a `grpc.aio` server runs a plain streaming handler
    on its threads only if it is one (one that returns an iterator, or aborts before it does,
    would never answer). Its aborts end the stream with their status (`_StreamContext`)."""

    def stream(request: Any, context: Any) -> Iterator[Any]:
        with contextlib.suppress(_Aborted):
            yield from handler(request, _StreamContext(context))

    return stream


_MAX_ID = 2**63 - 1  # ids are positive 63-bit integers (they are SQLite INTEGERs)


def _check_ids(request: Message) -> None:
    """INVALID_ARGUMENT for a top-level ``*_id``/``*_ids`` integer out of the id range."""
    for field, value in request.ListFields():
        if field.cpp_type != field.CPPTYPE_UINT64 or not field.name.endswith(("_id", "_ids")):
            continue
        values = value if isinstance(value, Iterable) else (value,)
        if any(v > _MAX_ID for v in values):
            raise errors.InvalidArgument(f"{field.name} out of range (ids are below 2**63)")
