"""Entry point of ``flwr-serverapp``: run ServerApps against the SuperLink's ServerAppIo API.

Isolation ``subprocess``: the SuperLink starts this process with one run's token in
``COROLLA_APP_TOKEN`` (or, to a spare started ahead of its run, hands the token over on stdin:
`corolla.runtime.standby`); it runs that run and exits. Isolation ``process``: an operator
starts it; it asks for work with the shared AppIo secret (``--appio-secret-file`` or
``COROLLA_APPIO_SECRET``), runs each run it is given, and waits for the next (``--max-runs``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import grpc

from corolla.common.backoff import retry
from corolla.common.config import UsageError
from corolla.common.errors import CorollaError, Unauthenticated
from corolla.common.exit import exit_with
from corolla.common.grpc import create_channel, error_from_rpc
from corolla.common.tls import read_root_certificates
from corolla.proto.v1 import serverappio_pb2 as spb
from corolla.proto.v1.serverappio_pb2_grpc import ServerAppIoStub
from corolla.runtime.config import ServerAppConfig
from corolla.runtime.config import parse_serverapp_config as parse_config
from corolla.runtime.serverapp_run import execute_run
from corolla.runtime.standby import await_run

log = logging.getLogger("corolla.serverapp")

__all__ = ["ServerAppConfig", "main", "parse_config", "serve"]

REQUEST_WAIT = 10.0
EXIT_UNAUTHENTICATED = 5


def _request_run(stub: ServerAppIoStub, secret: str) -> tuple[int, str] | None:
    request = spb.RequestRunRequest(wait_seconds=REQUEST_WAIT, secret=secret)
    try:
        reply = stub.RequestRun(request, timeout=REQUEST_WAIT + 30)
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from exc
    return (reply.run_id, reply.token) if reply.run_id else None


def _unreachable(attempt: int, exc: CorollaError, delay: float) -> None:
    log.warning("SuperLink unreachable (%s); retrying in %.1f s", exc, delay)


def _exit_now() -> None:
    """The run was stopped elsewhere: end this one-run process (as on SIGTERM)."""
    log.warning("the run was stopped; exiting")
    os.kill(os.getpid(), signal.SIGTERM)


def serve(config: ServerAppConfig) -> int:
    roots = read_root_certificates(config.root_certificates) if config.root_certificates else None
    channel = create_channel(
        config.address,
        insecure=config.insecure,
        root_certificates=roots,
        client_tls=config.client_tls,
    )
    stub = ServerAppIoStub(channel)
    try:
        if config.token is not None:
            # No exit with the parent: a SuperLink that restarts finds this process still
            # serving its run; if it does not come back, the calls give up after the window.
            # The one run ending elsewhere (stopped) ends the process.
            completed = execute_run(
                stub,
                channel,
                config.token,
                retry_window=config.retry_window,
                on_stopped=_exit_now,
            )
            return 0 if completed else 1
        secret = config.secret
        assert secret is not None
        log.info("waiting for runs from the SuperLink at %s", config.address)
        served = 0
        while config.max_runs is None or served < config.max_runs:
            claimed = retry(lambda: _request_run(stub, secret), on_retry=_unreachable)
            if claimed is not None:
                log.info("run %d: picked up", claimed[0])
                execute_run(stub, channel, claimed[1], retry_window=config.retry_window)
                served += 1
        return 0
    finally:
        channel.close()


def main(argv: Sequence[str] | None = None) -> None:
    await_run("flwr-serverapp")  # a spare (isolation subprocess) waits here for its run
    try:
        config = parse_config(argv)
    except UsageError as exc:
        print(f"flwr-serverapp: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        code = serve(config)
    except Unauthenticated as exc:
        print(f"flwr-serverapp: refused by the SuperLink: {exc}", file=sys.stderr)
        sys.exit(EXIT_UNAUTHENTICATED)
    except CorollaError as exc:
        print(f"flwr-serverapp: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    exit_with(code)


if __name__ == "__main__":
    main()
