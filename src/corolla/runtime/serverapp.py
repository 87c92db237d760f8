"""Entry point of ``flwr-serverapp``: run one ServerApp against the SuperLink's ServerAppIo API.

In isolation ``subprocess`` the SuperLink starts this process with the run's token in
``COROLLA_APP_TOKEN``. The process pulls its inputs (run, FAB, context), runs the app with a
`GrpcGrid`, forwards its output to the run's log, and pushes back the final context and status.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import dataclass
from types import FrameType

import grpc

from corolla.clientapp.clientapp import short_traceback
from corolla.common.errors import AppError, CorollaError
from corolla.common.grpc import create_channel, error_from_rpc
from corolla.fab import load_app_config
from corolla.proto.v1 import serverappio_pb2 as spb
from corolla.proto.v1.serverappio_pb2_grpc import ServerAppIoStub
from corolla.records.serde import context_to_proto
from corolla.records.wire import decode_context
from corolla.runtime.grid import GrpcGrid
from corolla.runtime.loader import install, load_component
from corolla.runtime.logs import LogForwarder
from corolla.serverapp.serverapp import ServerApp

TOKEN_ENV = "COROLLA_APP_TOKEN"
RPC_TIMEOUT = 60.0
log = logging.getLogger("corolla.serverapp")


@dataclass(frozen=True)
class ServerAppConfig:
    address: str
    insecure: bool
    token: str


def parse_config(argv: list[str] | None = None) -> ServerAppConfig:
    parser = argparse.ArgumentParser(prog="flwr-serverapp", description=__doc__)
    parser.add_argument("--serverappio-api-address", default="127.0.0.1:9091")
    parser.add_argument("--insecure", action="store_true", help="connect without TLS")
    args = parser.parse_args(argv)
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        parser.exit(
            2, f"flwr-serverapp: {TOKEN_ENV} is not set (isolation 'process' arrives later)\n"
        )
    if not args.insecure:
        parser.exit(2, "flwr-serverapp: TLS is not available yet; pass --insecure\n")
    return ServerAppConfig(args.serverappio_api_address, args.insecure, token)


def run(config: ServerAppConfig) -> int:
    channel = create_channel(config.address, insecure=config.insecure)
    stub = ServerAppIoStub(channel)
    try:
        inputs = stub.PullAppInputs(
            spb.PullAppInputsRequest(token=config.token), timeout=RPC_TIMEOUT
        )
    except grpc.RpcError as exc:
        print(f"flwr-serverapp: {error_from_rpc(exc, config.address)}", file=sys.stderr)
        return 1
    run_id = inputs.run.run_id
    grid = GrpcGrid(channel, config.token, run_id)

    def push_logs(lines: list[str]) -> None:
        request = spb.PushLogsRequest(run_id=run_id, token=config.token, lines=lines)
        stub.PushLogs(request, timeout=RPC_TIMEOUT)

    sub_status, details = "completed", ""
    context = None
    with LogForwarder(push_logs):
        try:
            context = decode_context(inputs.context, grid._fetch)
            app_dir = install(inputs.fab.content, inputs.fab.hash)
            reference = load_app_config(app_dir).serverapp
            app = load_component(app_dir, reference, ServerApp)
            log.info("run %d: starting ServerApp %s", run_id, reference)
            app(grid, context)
            log.info("run %d: ServerApp finished", run_id)
        except AppError as exc:
            sub_status, details = "failed", str(exc)
            log.error("%s", exc)
        except Exception as exc:
            sub_status = "failed"
            details = f"ServerApp raised {type(exc).__name__}: {exc}\n{short_traceback(exc)}"
            log.error("ServerApp raised an exception:\n%s", short_traceback(exc))
    request = spb.PushAppOutputsRequest(token=config.token, sub_status=sub_status, details=details)
    if context is not None:
        request.context.CopyFrom(context_to_proto(context))
    try:
        stub.PushAppOutputs(request, timeout=RPC_TIMEOUT)
    except grpc.RpcError as exc:
        print(f"flwr-serverapp: cannot report the result: {error_from_rpc(exc)}", file=sys.stderr)
        return 1
    finally:
        channel.close()
    return 0 if sub_status == "completed" else 1


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        sys.exit(run(config))
    except CorollaError as exc:
        print(f"flwr-serverapp: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
