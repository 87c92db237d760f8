"""Entry point of `flwr-clientapp`: runs ClientApps for a SuperNode over its ClientAppIo API.

Isolation ``subprocess`` (the SuperNode starts us with ``COROLLA_APP_TOKEN`` in the
environment): serve that one run and exit 0 once it is over. The process also exits when its
parent dies or the SuperNode stays unreachable for 10 s.

Isolation ``process`` (started by an operator, no token): a long-running process. It asks the
SuperNode for work with ``RequestRun`` and the shared secret (``--appio-secret-file PATH`` or
``COROLLA_APPIO_SECRET``, never on the command line), serves the run it is handed (inputs, FAB
installed under ``$COROLLA_HOME/apps``, the app imported from its own directory, messages
answered, the context pushed back), forgets that app's modules and waits for the next run.
While the SuperNode is unreachable it retries with capped backoff. ``--max-runs N`` exits 0
after N runs; a refused secret exits 5 with one line; SIGTERM/SIGINT exit 0.

During a run a background thread sends ``Heartbeat`` every second. When the SuperNode says the
run is over (or no longer knows our token) the run is abandoned: an app call in progress is
interrupted (`RunAbandoned`) and the process moves on.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import TypeVar

import grpc

from corolla.clientapp.clientapp import ClientApp
from corolla.common.appio import SECRET_ENV, TOKEN_ENV, app_secret
from corolla.common.errors import AppError, CorollaError, Unauthenticated, Unavailable
from corolla.common.grpc import create_channel, error_from_rpc
from corolla.common.objects import Buffer
from corolla.common.tls import read_root_certificates
from corolla.common.transfer import TOKEN_KEY, ObjectClient
from corolla.fab import load_app_config
from corolla.proto.v1 import clientappio_pb2 as cpb
from corolla.proto.v1 import clientappio_pb2_grpc
from corolla.proto.v1 import message_pb2 as mpb
from corolla.records import Context, Error, ErrorCode, Message, RecordDict
from corolla.records.message import restore_message
from corolla.records.serde import metadata_from_proto
from corolla.records.wire import decode_context, decode_messages, encode_context, encode_messages
from corolla.runtime.backoff import Backoff
from corolla.runtime.loader import install, load_component, unload
from corolla.runtime.logs import LogForwarder

# Named explicitly: run with `python -m`, __name__ would be "__main__" in `flwr log` lines.
log = logging.getLogger("corolla.runtime.clientapp")

__all__ = ["TOKEN_ENV", "ClientAppProcessConfig", "main", "parse_args", "run", "serve_runs"]

SERVICE = "corolla.proto.v1.ClientAppIo"
POLL_WAIT = 10.0  # long-poll seconds (PullMessage, RequestRun)
UNREACHABLE_LIMIT = 10.0  # within a run: give up when the SuperNode is away this long
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TIMEOUT = 2.0
RPC_TIMEOUT = 30.0
OBJECT_TIMEOUT = 600.0
BACKOFF_CAP = 10.0  # longest pause between attempts to reach the SuperNode (isolation process)
EXIT_UNAUTHENTICATED = 5
_PARENT_CHECK = 0.5

_R = TypeVar("_R")


@dataclass(frozen=True)
class ClientAppProcessConfig:
    """``token`` set: isolation subprocess (one run); empty: isolation process (``secret``)."""

    address: str
    insecure: bool
    token: str = field(default="", repr=False)
    root_certificates: bytes | None = field(default=None, repr=False)
    secret: str = field(default="", repr=False)
    max_runs: int = 0  # isolation process: exit after this many runs (0: never)

    @property
    def external(self) -> bool:
        return not self.token


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flwr-clientapp",
        description="Run ClientApps for a SuperNode. Started by the SuperNode (isolation "
        f"subprocess, {TOKEN_ENV} set) it serves one run; started by an operator (isolation "
        "process) it waits for runs, serves them one after another and keeps running.",
    )
    parser.add_argument(
        "--clientappio-api-address",
        default="127.0.0.1:9094",
        metavar="HOST:PORT",
        help="the SuperNode's ClientAppIo API (default: %(default)s)",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="connect without TLS (local testing only)"
    )
    parser.add_argument(
        "--root-certificates",
        type=Path,
        metavar="PATH",
        help="PEM CA certificates to verify the SuperNode's ClientAppIo API (default without "
        "--insecure: the system roots)",
    )
    parser.add_argument(
        "--appio-secret-file",
        type=Path,
        metavar="PATH",
        help=f"isolation process: file holding the SuperNode's AppIo secret (or set "
        f"{SECRET_ENV}; never pass the secret itself on the command line)",
    )
    parser.add_argument(
        "--max-runs",
        type=int,
        default=0,
        metavar="N",
        help="isolation process: exit 0 after serving N runs (default: keep running)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> ClientAppProcessConfig:
    """Parse the command line and environment; a usage error exits 2 with one line."""
    args = _parser().parse_args(argv)
    if args.insecure and args.root_certificates is not None:
        _usage("--insecure means no TLS; drop --root-certificates or --insecure")
    if args.max_runs < 0:
        _usage("--max-runs must be 0 (no limit) or more")
    try:
        roots = read_root_certificates(args.root_certificates) if args.root_certificates else None
        token = os.environ.get(TOKEN_ENV, "")
        secret = "" if token else app_secret(args.appio_secret_file)
    except CorollaError as exc:
        _usage(str(exc))
    if token and (args.max_runs or args.appio_secret_file):
        _usage(
            f"{TOKEN_ENV} is set, so this process serves the one run its SuperNode started it "
            "for; --max-runs and --appio-secret-file apply to isolation process only"
        )
    if not token and not secret:
        _usage(
            f"no AppIo secret: pass --appio-secret-file PATH or set {SECRET_ENV} (isolation "
            f"process); a SuperNode's own app processes get {TOKEN_ENV} instead"
        )
    return ClientAppProcessConfig(
        address=args.clientappio_api_address,
        insecure=args.insecure,
        token=token,
        root_certificates=roots,
        secret=secret or "",
        max_runs=args.max_runs,
    )


def _usage(message: str) -> None:
    print(f"flwr-clientapp: {message}", file=sys.stderr)
    sys.exit(2)


class AppIo:
    """The ClientAppIo calls of one run, with deadlines and translated errors."""

    def __init__(self, channel: grpc.Channel, token: str) -> None:
        self._stub = clientappio_pb2_grpc.ClientAppIoStub(channel)
        self._objects = ObjectClient(channel, SERVICE, metadata=[(TOKEN_KEY, token)])
        self._token = token

    def _fetch(self, object_ids: list[str]) -> dict[str, memoryview]:
        try:
            return self._objects.pull(
                object_ids, ids={"token": self._token}, timeout=OBJECT_TIMEOUT
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    def pull_inputs(self) -> cpb.ClientPullAppInputsResponse:
        request = cpb.ClientPullAppInputsRequest(token=self._token)
        return _persist(lambda: self._stub.PullAppInputs(request, timeout=RPC_TIMEOUT))

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
        try:
            self._objects.push(everything, ids={"token": self._token}, timeout=OBJECT_TIMEOUT)
            self._stub.PushMessage(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    def push_logs(self, lines: list[str]) -> None:
        self._stub.PushLogs(cpb.ClientPushLogsRequest(token=self._token, lines=lines), timeout=10)


def _persist(call: Callable[[], _R]) -> _R:
    """Run ``call``, retrying while the SuperNode is unreachable for up to 10 s."""
    give_up = time.monotonic() + UNREACHABLE_LIMIT
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            error = error_from_rpc(exc)
            if not isinstance(error, Unavailable) or time.monotonic() > give_up:
                raise error from exc
        time.sleep(0.5)


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
        with LogForwarder(io.push_logs):
            app_dir: Path | None = None
            try:
                try:
                    app_dir = install(inputs.fab.content, inputs.fab.hash)
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


def _channel(config: ClientAppProcessConfig) -> grpc.Channel:
    return create_channel(
        config.address, insecure=config.insecure, root_certificates=config.root_certificates
    )


def run(config: ClientAppProcessConfig, interrupter: Interrupter | None = None) -> int:
    """Isolation subprocess: serve the one run of ``config.token``; returns the exit code."""
    channel = _channel(config)
    try:
        return serve_run(channel, config.token, interrupter or Interrupter(), external=False)
    except CorollaError as exc:
        log.error("flwr-clientapp stops: %s", exc)
        return 1
    finally:
        channel.close()


# -- many runs (isolation process) ----------------------------------------------------------------


def request_run(
    stub: clientappio_pb2_grpc.ClientAppIoStub, config: ClientAppProcessConfig, wait: float
) -> tuple[int, str]:
    """Ask for a run that needs an app process; ``(0, "")`` when none came within ``wait``."""
    request = cpb.ClientRequestRunRequest(secret=config.secret, wait_seconds=wait)
    try:
        response = stub.RequestRun(request, timeout=wait + 5.0)
    except grpc.RpcError as exc:
        raise error_from_rpc(exc, config.address) from exc
    return response.run_id, response.token


def serve_runs(config: ClientAppProcessConfig, interrupter: Interrupter | None = None) -> int:
    """Isolation process: wait for runs and serve them one after another; the exit code."""
    interrupter = interrupter or Interrupter()
    channel = _channel(config)
    stub = clientappio_pb2_grpc.ClientAppIoStub(channel)
    served = 0
    backoff = Backoff(cap=BACKOFF_CAP)
    failures = 0  # consecutive failed attempts to reach the SuperNode
    connected = False
    try:
        while not config.max_runs or served < config.max_runs:
            try:  # the first call answers at once: a refused secret shows up right away
                run_id, token = request_run(stub, config, POLL_WAIT if connected else 0.0)
            except Unauthenticated as exc:
                print(
                    f"flwr-clientapp: the SuperNode at {config.address} refused this process: "
                    f"{exc} (check --appio-secret-file / {SECRET_ENV})",
                    file=sys.stderr,
                )
                return EXIT_UNAUTHENTICATED
            except CorollaError as exc:
                connected = False
                failures += 1
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "cannot ask the SuperNode at %s for work: %s; retrying with backoff "
                    "(up to %g s)",
                    config.address,
                    exc,
                    BACKOFF_CAP,
                )
                time.sleep(backoff.next())
                continue
            if not connected:
                connected, failures = True, 0
                backoff.reset()
                log.info(
                    "connected to the SuperNode at %s (isolation process); waiting for runs",
                    config.address,
                )
            if not run_id:
                continue
            served += 1
            log.info("run %d: serving it", run_id)
            try:
                serve_run(channel, token, interrupter, external=True)
            except CorollaError as exc:
                log.warning("run %d: stopped serving it: %s", run_id, exc)
            log.info("run %d: done; %d run(s) served", run_id, served)
        return 0
    finally:
        channel.close()


# -- process ----------------------------------------------------------------------------------


class _Stop(BaseException):
    """SIGTERM or SIGINT: stop serving (isolation process)."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _exit_with_parent() -> None:
    """Exit when the process that started us is gone (we were re-parented)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_CHECK)
        print("flwr-clientapp: parent process gone, exiting", file=sys.__stderr__)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    interrupter = Interrupter()
    interrupter.install()
    if not config.external:
        _exit_with_parent()
        sys.exit(run(config, interrupter))
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        code = serve_runs(config, interrupter)
    except _Stop as stop:
        log.info("flwr-clientapp stops (%s)", stop)
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()
