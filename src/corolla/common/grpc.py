"""gRPC plumbing shared by every daemon and client: channels, servers, error mapping."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any, Protocol, TypeVar

import grpc

from corolla.common import errors
from corolla.common.tls import ClientTls

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # unary messages; large arrays stream in chunks instead

KEEPALIVE_ENV = "COROLLA_GRPC_KEEPALIVE_SECONDS"
DEFAULT_KEEPALIVE = 30.0

_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Reconnect quickly after a peer restarts (gRPC's own default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 10_000),
]

_TO_STATUS: list[tuple[type[errors.CorollaError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
]
_FROM_STATUS = {code: cls for cls, code in _TO_STATUS}
_FROM_STATUS[grpc.StatusCode.UNIMPLEMENTED] = errors.FailedPrecondition

F = TypeVar("F", bound=Callable[..., Any])


def keepalive_seconds() -> float:
    """The keepalive ping interval of every channel and server: ``$COROLLA_GRPC_KEEPALIVE_SECONDS``
    or 30 s. Both ends derive their settings from it, so they always agree."""
    raw = os.environ.get(KEEPALIVE_ENV, "")
    if not raw:
        return DEFAULT_KEEPALIVE
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise errors.InvalidArgument(f"{KEEPALIVE_ENV} must be a positive number, not {raw!r}")
    return value


def _keepalive(*, server: bool) -> list[tuple[str, Any]]:
    """Clients ping an idle connection every interval (a dead peer is noticed within about two
    intervals); servers accept pings at up to twice that rate, however long a call says
    nothing, so a quiet long poll or log stream is never cut with "too many pings"."""
    interval_ms = max(1, round(keepalive_seconds() * 1000))
    options: list[tuple[str, Any]] = [
        ("grpc.keepalive_time_ms", interval_ms),
        ("grpc.keepalive_timeout_ms", max(interval_ms, 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    if server:
        options += [
            ("grpc.http2.min_ping_interval_without_data_ms", interval_ms // 2),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", interval_ms // 2),
            ("grpc.http2.max_ping_strikes", 0),
        ]
    return options


def _merge_options(
    extra: list[tuple[str, Any]] | None, *, server: bool = False
) -> list[tuple[str, Any]]:
    """Defaults overridden by ``extra`` (gRPC would keep the first of two equal keys)."""
    return list({**dict(_OPTIONS), **dict(_keepalive(server=server)), **dict(extra or [])}.items())


def status_for(exc: errors.CorollaError) -> grpc.StatusCode:
    for cls, code in _TO_STATUS:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def status_number(code: grpc.StatusCode) -> int:
    """The wire number of a status code (``status.code`` of a message that carries one)."""
    number: int = code.value[0]
    return number


def error_from_status(number: int, detail: str, peer: str = "") -> errors.CorollaError:
    """`error_from_rpc` for a status carried in a message (its wire number and message)."""
    code = next((c for c in grpc.StatusCode if c.value[0] == number), grpc.StatusCode.UNKNOWN)
    return _error_for(code, detail, peer)


def error_from_rpc(exc: grpc.RpcError, peer: str = "") -> errors.CorollaError:
    """Turn a failed call into the matching `CorollaError` (the one translation, client side)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    detail = (exc.details() or "") if hasattr(exc, "details") else str(exc)
    return _error_for(code, detail, peer)


def _error_for(code: grpc.StatusCode, detail: str, peer: str) -> errors.CorollaError:
    if code == grpc.StatusCode.UNAVAILABLE:
        where = f" at {peer}" if peer else ""
        return errors.Unavailable(f"cannot reach the server{where}: {detail}")
    cls = _FROM_STATUS.get(code, errors.CorollaError)
    return cls(detail or code.name)


def create_channel(
    address: str,
    *,
    insecure: bool,
    root_certificates: bytes | None = None,
    client_tls: ClientTls | None = None,
    options: list[tuple[str, Any]] | None = None,
) -> grpc.Channel:
    """A channel to ``address``: TLS unless ``insecure`` (then plaintext). ``root_certificates``:
    the CAs to trust (None: the system roots); ``client_tls``: the certificate to present to a
    server that asks for one (mutual TLS)."""
    opts = _merge_options(options)
    if insecure:
        if client_tls is not None:
            raise errors.InvalidArgument("a client certificate needs TLS, not an insecure channel")
        return grpc.insecure_channel(address, options=opts)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root_certificates,
        private_key=client_tls.private_key if client_tls else None,
        certificate_chain=client_tls.certificate_chain if client_tls else None,
    )
    return grpc.secure_channel(address, credentials, options=opts)


def server_options(extra: list[tuple[str, Any]] | None = None) -> list[tuple[str, Any]]:
    """Every server's options (keepalive, message sizes), overridden by ``extra``."""
    # No SO_REUSEPORT: a second daemon on a busy port must fail, not silently share it.
    return _merge_options([("grpc.so_reuseport", 0), *(extra or [])], server=True)


def create_server(
    max_workers: int = 64, options: list[tuple[str, Any]] | None = None
) -> grpc.Server:
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=server_options(options),
        maximum_concurrent_rpcs=max_workers * 4,
    )


class Ports(Protocol):
    """What `bind` needs of a server: a `grpc.Server` or a `corolla.common.aioserver`."""

    def add_insecure_port(self, address: str) -> int: ...

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int: ...


def bind(server: Ports, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Bind ``address`` (``host:port``, port 0 picks a free one); returns the bound port."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise errors.Unavailable(f"cannot bind {address}: {exc}") from exc
    if port == 0:
        raise errors.Unavailable(f"cannot bind {address} (in use or invalid)")
    return port


def abort_on_error(method: F) -> F:
    """Servicer decorator: a `CorollaError` becomes its gRPC status with its message; any other
    exception becomes INTERNAL (logged with its traceback) and never crashes the daemon. A
    coroutine method (on a `grpc.aio` server) stays one."""
    if inspect.iscoroutinefunction(method):
        return _abort_on_error_async(method)

    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            result = method(self, request, context)
            if isinstance(result, Iterator):
                return _guard_stream(result, context, method.__name__)
            return result
        except errors.CorollaError as exc:
            context.abort(status_for(exc), str(exc))
        except Exception:
            log.exception("unexpected error in %s", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method.__name__}")

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper  # type: ignore[return-value]  # same call signature as ``method``


def _abort_on_error_async(method: F) -> F:
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(self, request, context)
        except errors.CorollaError as exc:
            await context.abort(status_for(exc), str(exc))
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unexpected error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method.__name__}")

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper  # type: ignore[return-value]  # same call signature as ``method``


def _guard_stream(stream: Iterator[Any], context: grpc.ServicerContext, name: str) -> Iterator[Any]:
    try:
        yield from stream
    except errors.CorollaError as exc:
        context.abort(status_for(exc), str(exc))
    except Exception:
        log.exception("unexpected error in %s", name)
        context.abort(grpc.StatusCode.INTERNAL, f"internal error in {name}")


class WaitSlots:
    """Bounds the calls that wait (long polls, followed streams) so that they never take every
    worker thread of a server: beyond ``limit`` waiting calls, a call that would wait is
    refused with RESOURCE_EXHAUSTED (clients back off and retry) and unary calls keep their
    threads."""

    def __init__(self, limit: int, what: str = "long polls") -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit}")
        self.limit = limit
        self._what = what
        self._free = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.busy = 0  # slots held now

    @contextlib.contextmanager
    def hold(self, wait: float) -> Iterator[float]:
        """A slot for up to ``wait`` seconds of waiting (none needed for ``wait <= 0``)."""
        if wait <= 0:
            yield 0.0
            return
        if not self._free.acquire(blocking=False):
            raise errors.ResourceExhausted(
                f"too many {self._what} at once (limit {self.limit}); retry shortly"
            )
        with self._lock:
            self.busy += 1
        try:
            yield wait
        finally:
            with self._lock:
                self.busy -= 1
            self._free.release()
