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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import grpc

from corolla.common.appio import SECRET_ENV, TOKEN_ENV, app_secret
from corolla.common.backoff import Backoff
from corolla.common.errors import CorollaError, Unauthenticated
from corolla.common.grpc import create_channel, error_from_rpc
from corolla.common.tls import read_root_certificates
from corolla.proto.v1 import clientappio_pb2 as cpb
from corolla.proto.v1 import clientappio_pb2_grpc
from corolla.runtime.clientapp_run import (
    POLL_WAIT,
    Interrupter,
    RunAbandoned,
    serve_run,
)
from corolla.runtime.parent import exit_with_parent

# Named explicitly: run with `python -m`, __name__ would be "__main__" in `flwr log` lines.
log = logging.getLogger("corolla.runtime.clientapp")

__all__ = [
    "TOKEN_ENV",
    "ClientAppProcessConfig",
    "Interrupter",
    "RunAbandoned",
    "main",
    "parse_args",
    "run",
    "serve_runs",
]

BACKOFF_CAP = 10.0  # longest pause between attempts to reach the SuperNode (isolation process)
EXIT_UNAUTHENTICATED = 5


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
                time.sleep(backoff.next_delay())
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


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    interrupter = Interrupter()
    interrupter.install()
    if not config.external:
        exit_with_parent("flwr-clientapp")
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
