"""One run of a ClientApp process: the ClientAppIo calls, heartbeats, interruption, serving."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import TypeVar

import grpc

from corolla.clientapp.clientapp import ClientApp
from corolla.common.backoff import Backoff, retry
from corolla.common.errors import AppError, CorollaError, Unauthenticated, Unavailable
from corolla.common.grpc import error_from_rpc
from corolla.common.objects import Buffer
from corolla.common.transfer import TOKEN_KEY, ObjectClient
from corolla.fab import load_app_config
from corolla.proto.v1 import clientappio_pb2 as cpb
from corolla.proto.v1 import clientappio_pb2_grpc
from corolla.proto.v1 import message_pb2 as mpb
from corolla.records import Context, Error, ErrorCode, Message, RecordDict, _spool
from corolla.records.message import restore_message
from corolla.records.serde import metadata_from_proto
from corolla.records.wire import decode_context, decode_messages, encode_context, encode_messages
from corolla.runtime.loader import install, load_component, unload
from corolla.runtime.localobjects import LocalObjects
from corolla.runtime.logs import LogForwarder

log = logging.getLogger("corolla.runtime.clientapp")

SERVICE = "corolla.proto.v1.ClientAppIo"
POLL_WAIT = 10.0  # long-poll seconds (PullMessage, RequestRun)
UNREACHABLE_LIMIT = 10.0  # within a run: give up when the SuperNode is away this long
PERSIST_BACKOFF_CAP = 2.0  # longest pause between those attempts
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TIMEOUT = 2.0
RPC_TIMEOUT = 30.0
OBJECT_TIMEOUT = 600.0

_R = TypeVar("_R")


class AppIo:
    """The ClientAppIo calls of one run, with deadlines and translated errors."""

    def __init__(self, channel: grpc.Channel, token: str) -> None:
        self._stub = clientappio_pb2_grpc.ClientAppIoStub(channel)
        self._objects = ObjectClient(channel, SERVICE, metadata=[(TOKEN_KEY, token)])
        self._token = token
        self._local: LocalObjects | None = None  # the SuperNode's files, when it shares them

    def _fetch(self, object_ids: list[str]) -> dict[str, memoryview]:
        found = self._local.read(object_ids) if self._local is not None else {}
        rest = [oid for oid in object_ids if oid not in found]
        if not rest:
            return found
        try:
            return found | self._objects.pull(  # trusted hop, see common/transfer.py
                rest, ids={"token": self._token}, timeout=OBJECT_TIMEOUT, verify=False
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    def pull_inputs(self) -> cpb.ClientPullAppInputsResponse:
        request = cpb.ClientPullAppInputsRequest(token=self._token)
        inputs = _persist(lambda: self._stub.PullAppInputs(request, timeout=RPC_TIMEOUT))
        if inputs.object_dir:
            self._local = LocalObjects(Path(inputs.object_dir))
        return inputs

    def context(self, inputs: cpb.ClientPullAppInputsResponse) -> Context:
        return decode_context(inputs.context, self._fetch)

    def heartbeat(self) -> bool:
        """True while the run is active for this process."""
        request = cpb.ClientHeartbeatRequest(token=self._token)
        try:
            return self._stub.Heartbeat(request, timeout=HEARTBEAT_TIMEOUT).run_active
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    def pull_message(self, wait: float) -> tuple[mpb.Message | None, bool]:
        request = cpb.ClientPullMessageRequest(token=self._token, wait_seconds=wait)
        response = _persist(lambda: self._stub.PullMessage(request, timeout=wait + 5.0))
        message = response.message if response.HasField("message") else None
        return message, response.run_active

    def decode(self, proto: mpb.Message) -> Message:
        return decode_messages([proto], self._fetch)[0]

    def push_reply(self, reply: Message, context: Context) -> None:
        protos, objects = encode_messages([reply])
        context_proto, context_objects = encode_context(context)
        everything: dict[str, Buffer] = {**objects, **context_objects}
        request = cpb.ClientPushMessageRequest(
            token=self._token, message=protos[0], context=context_proto
        )
        if self._local is not None:  # the SuperNode finds them there: nothing to stream
            self._local.place(everything)
        try:
            self._objects.push(everything, ids={"token": self._token}, timeout=OBJECT_TIMEOUT)
            self._stub.PushMessage(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    def push_logs(self, lines: list[str]) -> None:
        self._stub.PushLogs(cpb.ClientPushLogsRequest(token=self._token, lines=lines), timeout=10)


def _persist(call: Callable[[], _R]) -> _R:
    """Run ``call``, retrying (`corolla.common.backoff.retry`) while the SuperNode is
    unreachable, for up to ``UNREACHABLE_LIMIT`` s."""

    def attempt() -> _R:
        try:
            return call()
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    return retry(
        attempt,
        retry_on=(Unavailable,),
        timeout=UNREACHABLE_LIMIT,
        backoff=Backoff(initial=0.5, cap=PERSIST_BACKOFF_CAP),
    )


# -- ending a run from the heartbeat thread -----------------------------------------------------


class RunAbandoned(BaseException):
    """Raised in the main thread to stop an app call whose run is over. Not an `Exception`, so
    that an app's ``except Exception`` does not swallow it."""


class Interrupter:
    """Interrupts the app call in the main thread (SIGUSR1 aimed at it) once a run is over.

    `install` (main thread only) sets the handler; without it a finished run is left when the
    app call returns. The handler raises only inside `app_call`, so nothing else is cut short.
    """

    def __init__(self) -> None:
        self._armed = False
        self._installed = False

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGUSR1, self._handle)
            self._installed = True

    @contextmanager
    def app_call(self, ended: threading.Event) -> Iterator[None]:
        self._armed = True
        try:
            if ended.is_set():
                raise RunAbandoned
            yield
        finally:
            self._armed = False

    def interrupt(self) -> None:
        main_thread = threading.main_thread().ident
        if self._installed and main_thread is not None:
            signal.pthread_kill(main_thread, signal.SIGUSR1)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._armed:
            raise RunAbandoned


class Heartbeat:
    """While active, sends ``Heartbeat`` every second from a background thread. ``ended`` is set
    (and ``on_end`` called) when the SuperNode says the run is over or forgot our token; a crash
    of the thread is re-raised in the main thread on exit."""

    def __init__(self, io: AppIo, on_end: Callable[[], None]) -> None:
        self._io = io
        self._on_end = on_end
        self.ended = threading.Event()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(HEARTBEAT_TIMEOUT + 1)
        if self._failure is not None and exc is None:
            raise self._failure

    def _loop(self) -> None:
        try:
            while not self._stop.wait(HEARTBEAT_INTERVAL):
                try:
                    active = self._io.heartbeat()
                except Unauthenticated:
                    active = False
                except CorollaError as exc:  # away for now: the main thread's calls decide
                    log.debug("heartbeat failed: %s", exc)
                    continue
                if not active:
                    break
        except BaseException as exc:  # handed to the main thread in __exit__
            self._failure = exc
        if not self._stop.is_set():
            self.ended.set()
            self._on_end()


# -- one run --------------------------------------------------------------------------------------


def serve(
    io: AppIo, app: ClientApp, context: Context, ended: threading.Event, interrupter: Interrupter
) -> None:
    """Answer messages until the run ends (or is abandoned)."""
    while not ended.is_set():
        proto, active = io.pull_message(POLL_WAIT)
        if proto is None:
            if not active:
                log.debug("run %d ended", context.run_id)
                return
            continue
        message = io.decode(proto)
        try:
            with interrupter.app_call(ended):
                reply = app(message, context)
        except RunAbandoned:
            log.warning(
                "run %d is over for this process; abandoned message %s",
                context.run_id,
                proto.metadata.message_id,
            )
            return
        if ended.is_set():
            return
        io.push_reply(reply, context)


def refuse(
    io: AppIo, context: Context, reason: str, ended: threading.Event, until_run_ends: bool
) -> None:
    """The app cannot load: answer waiting messages with the reason (all of the run's messages
    when ``until_run_ends``, else those waiting now)."""
    wait = POLL_WAIT if until_run_ends else 0.5
    while not ended.is_set():
        proto, active = io.pull_message(wait)
        if proto is None:
            if until_run_ends and active:
                continue
            return
        received = restore_message(metadata_from_proto(proto.metadata), content=RecordDict())
        error = Error(ErrorCode.LOAD_CLIENT_APP_EXCEPTION, reason)
        io.push_reply(Message(error=error, reply_to=received), context)
        if not until_run_ends:
            wait = 0.2


def load_app(app_dir: Path) -> ClientApp:
    try:
        reference = load_app_config(app_dir).clientapp
    except CorollaError as exc:
        raise AppError(str(exc)) from exc
    return load_component(app_dir, reference, ClientApp)


def serve_run(
    channel: grpc.Channel, token: str, interrupter: Interrupter, *, external: bool
) -> int:
    """Serve the run ``token`` stands for; 0 when it ended, 1 when its app could not load."""
    io = AppIo(channel, token)
    # Heartbeats from the start: pulling a large context or installing the FAB takes time.
    with Heartbeat(io, interrupter.interrupt) as heartbeat:
        inputs = io.pull_inputs()
        context = io.context(inputs)
        # The reply's large arrays are made in the SuperNode's run directory, when it shares
        # it: handing them over is then a link, not a copy (see `corolla.records._spool`).
        spool = Path(inputs.object_dir) if inputs.object_dir else None
        with _spool.using(spool), LogForwarder(io.push_logs):
            app_dir: Path | None = None
            try:
                try:
                    app_dir = install(inputs.fab.content, inputs.run.fab_hash)
                    app = load_app(app_dir)
                except AppError as exc:
                    log.error("ClientApp of run %d cannot be loaded: %s", context.run_id, exc)
                    reason = f"ClientApp cannot be loaded: {exc}"
                    refuse(io, context, reason, heartbeat.ended, until_run_ends=external)
                    return 1
                serve(io, app, context, heartbeat.ended, interrupter)
                return 0
            finally:
                if external and app_dir is not None:
                    unload(app_dir)  # the next run imports its own modules afresh
