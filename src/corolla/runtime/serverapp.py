"""Entry point of ``flwr-serverapp``: run ServerApps against the SuperLink's ServerAppIo API.

Isolation ``subprocess``: the SuperLink starts this process with one run's token in
``COROLLA_APP_TOKEN``; it runs that run and exits. Isolation ``process``: an operator starts it;
it asks for work with the shared AppIo secret (``--appio-secret-file`` or
``COROLLA_APPIO_SECRET``), runs each run it is given, and waits for the next (``--max-runs``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import grpc

from corolla.common.appio import TOKEN_ENV, app_secret
from corolla.common.backoff import Backoff
from corolla.common.errors import CorollaError, Unauthenticated, Unavailable
from corolla.common.grpc import create_channel, error_from_rpc
from corolla.common.tls import read_root_certificates
from corolla.proto.v1 import serverappio_pb2 as spb
from corolla.proto.v1.serverappio_pb2_grpc import ServerAppIoStub
from corolla.runtime.parent import exit_with_parent
from corolla.runtime.serverapp_run import execute_run

log = logging.getLogger("corolla.serverapp")

REQUEST_WAIT = 10.0
EXIT_UNAUTHENTICATED = 5


@dataclass(frozen=True)
class ServerAppConfig:
    address: str
    insecure: bool
    root_certificates: Path | None
    token: str | None  # subprocess mode
    secret: str | None  # process mode
    max_runs: int | None


def parse_config(argv: list[str] | None = None) -> ServerAppConfig:
    parser = argparse.ArgumentParser(prog="flwr-serverapp", description=__doc__)
    parser.add_argument("--serverappio-api-address", default="127.0.0.1:9091")
    parser.add_argument("--insecure", action="store_true", help="connect without TLS")
    parser.add_argument("--root-certificates", type=Path, help="CA to verify the SuperLink")
    parser.add_argument("--appio-secret-file", type=Path, help="shared AppIo secret (process)")
    parser.add_argument("--max-runs", type=int, default=None, help="exit after this many runs")
    args = parser.parse_args(argv)
    token = os.environ.get(TOKEN_ENV) or None
    try:
        secret = None if token else app_secret(args.appio_secret_file)
    except CorollaError as exc:
        parser.exit(2, f"flwr-serverapp: {exc}\n")
    if token is None and secret is None:
        parser.exit(
            2,
            "flwr-serverapp: no AppIo secret: give --appio-secret-file or set "
            "COROLLA_APPIO_SECRET (isolation process)\n",
        )
    if args.insecure == (args.root_certificates is not None):
        parser.exit(2, "flwr-serverapp: give either --insecure or --root-certificates\n")
    if args.max_runs is not None and args.max_runs < 1:
        parser.exit(2, "flwr-serverapp: --max-runs must be at least 1\n")
    return ServerAppConfig(
        args.serverappio_api_address,
        args.insecure,
        args.root_certificates,
        token,
        secret,
        args.max_runs,
    )


def _request_run(stub: ServerAppIoStub, secret: str) -> tuple[int, str] | None:
    request = spb.RequestRunRequest(wait_seconds=REQUEST_WAIT, secret=secret)
    try:
        reply = stub.RequestRun(request, timeout=REQUEST_WAIT + 30)
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from exc
    return (reply.run_id, reply.token) if reply.run_id else None


def serve(config: ServerAppConfig) -> int:
    roots = read_root_certificates(config.root_certificates) if config.root_certificates else None
    channel = create_channel(config.address, insecure=config.insecure, root_certificates=roots)
    stub = ServerAppIoStub(channel)
    try:
        if config.token is not None:
            exit_with_parent("flwr-serverapp")
            return 0 if execute_run(stub, channel, config.token) else 1
        assert config.secret is not None
        log.info("waiting for runs from the SuperLink at %s", config.address)
        served = 0
        backoff = Backoff()
        while config.max_runs is None or served < config.max_runs:
            try:
                claimed = _request_run(stub, config.secret)
            except Unavailable as exc:
                delay = backoff.next_delay()
                log.warning("SuperLink unreachable (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
                continue
            backoff.reset()
            if claimed is not None:
                log.info("run %d: picked up", claimed[0])
                execute_run(stub, channel, claimed[1])
                served += 1
        return 0
    finally:
        channel.close()


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        sys.exit(serve(config))
    except Unauthenticated as exc:
        print(f"flwr-serverapp: refused by the SuperLink: {exc}", file=sys.stderr)
        sys.exit(EXIT_UNAUTHENTICATED)
    except CorollaError as exc:
        print(f"flwr-serverapp: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
