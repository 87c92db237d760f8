"""Entry point of `flwr-clientapp`: runs ClientApps for a SuperNode over its ClientAppIo API.

Isolation ``subprocess`` (the SuperNode starts us with ``COROLLA_APP_TOKEN`` in the
environment): serve that one run and exit 0 once it is over. The process also exits when its
parent dies or the SuperNode stays unreachable for 10 s. A spare (``COROLLA_APP_STANDBY=1``,
started before its run) gets the token on stdin instead, then goes on the same way
(`corolla.runtime.standby`).

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

import functools
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from types import FrameType

import grpc

from corolla.common.appio import SECRET_ENV, TOKEN_ENV
from corolla.common.backoff import Backoff, retry
from corolla.common.config import UsageError
from corolla.common.errors import CorollaError, Unauthenticated
from corolla.common.exit import exit_with
from corolla.common.grpc import create_channel, error_from_rpc
from corolla.proto.v1 import clientappio_pb2 as cpb
from corolla.proto.v1 import clientappio_pb2_grpc
from corolla.runtime.clientapp_run import (
    POLL_WAIT,
    Interrupter,
    RunAbandoned,
    serve_run,
)
from corolla.runtime.config import ClientAppProcessConfig, parse_clientapp_config
from corolla.runtime.parent import exit_with_parent
from corolla.runtime.standby import await_run

# Named explicitly: run with `python -m`, __name__ would be "__main__" in `flwr log` lines.
log = logging.getLogger("corolla.runtime.clientapp")

__all__ = [
    "TOKEN_ENV",
    "ClientAppProcessConfig",
    "Interrupter",
    "RunAbandoned",
    "main",
    "parse_args",
    "parse_clientapp_config",
    "run",
    "serve_runs",
]

BACKOFF_CAP = 10.0  # longest pause between attempts to reach the SuperNode (isolation process)
EXIT_UNAUTHENTICATED = 5


def parse_args(argv: Sequence[str] | None = None) -> ClientAppProcessConfig:
    """For `main`: the config, or one line on stderr and exit 2 (`parse_clientapp_config`
    raises `UsageError` instead)."""
    try:
        return parse_clientapp_config(argv)
    except UsageError as exc:
        print(f"flwr-clientapp: {exc}", file=sys.stderr)
        sys.exit(2)


def _channel(config: ClientAppProcessConfig) -> grpc.Channel:
    return create_channel(
        config.address,
        insecure=config.insecure,
        root_certificates=config.root_certificates,
        client_tls=config.client_tls,
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


class _Refused(Exception):
    """The SuperNode refused our secret: not worth another attempt (`retry` passes it on)."""


def serve_runs(config: ClientAppProcessConfig, interrupter: Interrupter | None = None) -> int:
    """Isolation process: wait for runs and serve them one after another; the exit code."""
    interrupter = interrupter or Interrupter()
    channel = _channel(config)
    stub = clientappio_pb2_grpc.ClientAppIoStub(channel)
    served = 0
    connected = False

    def ask(waits: Iterator[float]) -> tuple[int, str]:
        try:
            return request_run(stub, config, next(waits, 0.0))
        except Unauthenticated as exc:
            raise _Refused(str(exc)) from exc

    def unreachable(attempt: int, exc: CorollaError, delay: float) -> None:
        nonlocal connected
        connected = False
        log.log(
            logging.WARNING if attempt == 1 else logging.DEBUG,
            "cannot ask the SuperNode at %s for work: %s; retrying with backoff (up to %g s)",
            config.address,
            exc,
            BACKOFF_CAP,
        )

    try:
        while not config.max_runs or served < config.max_runs:
            # The first call answers at once (a refused secret shows up right away); while the
            # SuperNode is unreachable every call is retried, with capped backoff, for ever.
            waits = iter([POLL_WAIT if connected else 0.0])
            try:
                run_id, token = retry(
                    functools.partial(ask, waits),
                    retry_on=(CorollaError,),
                    backoff=Backoff(cap=BACKOFF_CAP),
                    on_retry=unreachable,
                )
            except _Refused as exc:
                print(
                    f"flwr-clientapp: the SuperNode at {config.address} refused this process: "
                    f"{exc} (check --appio-secret-file / {SECRET_ENV})",
                    file=sys.stderr,
                )
                return EXIT_UNAUTHENTICATED
            if not connected:
                connected = True
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


def main(argv: Sequence[str] | None = None) -> None:
    await_run("flwr-clientapp")  # a spare (isolation subprocess) waits here for its run
    config = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    interrupter = Interrupter()
    interrupter.install()
    if not config.external:
        exit_with_parent("flwr-clientapp")
        exit_with(run(config, interrupter))
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        code = serve_runs(config, interrupter)
    except _Stop as stop:
        log.info("flwr-clientapp stops (%s)", stop)
        code = 0
    exit_with(code)


if __name__ == "__main__":
    main()
