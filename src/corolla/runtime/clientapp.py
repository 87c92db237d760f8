"""Entry point of `flwr-clientapp`: one warm process serving a run's messages on a SuperNode.

Flow: pull the app inputs (run, FAB, context), install the FAB and load the ClientApp, then
long-poll the SuperNode for messages, answer each with the updated context, and exit 0 once
the run is over. The run token comes from ``COROLLA_APP_TOKEN`` (never the command line).
The process also exits when its parent dies or the SuperNode stays unreachable for 10 s.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from corolla.clientapp.clientapp import ClientApp
from corolla.common.errors import AppError, CorollaError, Unavailable
from corolla.common.grpc import create_channel, error_from_rpc
from corolla.common.objects import Buffer
from corolla.common.transfer import TOKEN_KEY, ObjectClient
from corolla.fab import load_app_config
from corolla.proto.v1 import clientappio_pb2 as cpb
from corolla.proto.v1 import clientappio_pb2_grpc
from corolla.proto.v1 import message_pb2 as mpb
from corolla.records import Context, Error, ErrorCode, Message, RecordDict
from corolla.records.message import restore_message
from corolla.records.serde import metadata_from_proto
from corolla.records.wire import decode_context, decode_messages, encode_context, encode_messages
from corolla.runtime.loader import install, load_component
from corolla.runtime.logs import LogForwarder

# Named explicitly: run with `python -m`, __name__ would be "__main__" in `flwr log` lines.
log = logging.getLogger("corolla.runtime.clientapp")

TOKEN_ENV = "COROLLA_APP_TOKEN"
SERVICE = "corolla.proto.v1.ClientAppIo"
POLL_WAIT = 10.0  # long-poll seconds
UNREACHABLE_LIMIT = 10.0  # give up when the SuperNode cannot be reached for this long
RPC_TIMEOUT = 30.0
OBJECT_TIMEOUT = 600.0
_PARENT_CHECK = 0.5

_R = TypeVar("_R")


@dataclass(frozen=True)
class ClientAppProcessConfig:
    address: str
    insecure: bool
    token: str
    root_certificates: bytes | None = None


def parse_args(argv: Sequence[str] | None = None) -> ClientAppProcessConfig:
    parser = argparse.ArgumentParser(prog="flwr-clientapp", description=__doc__)
    parser.add_argument("--clientappio-api-address", default="127.0.0.1:9094")
    parser.add_argument("--insecure", action="store_true", help="no TLS (local testing only)")
    args = parser.parse_args(argv)
    if not args.insecure:
        _usage("TLS is not available yet in this version of Corolla; pass --insecure")
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        _usage(f"no app token: set {TOKEN_ENV} (the SuperNode does this for its app processes)")
    return ClientAppProcessConfig(args.clientappio_api_address, True, token)


def _usage(message: str) -> None:
    print(f"flwr-clientapp: {message}", file=sys.stderr)
    sys.exit(2)


class AppIo:
    """The ClientAppIo calls this process makes, with deadlines and translated errors."""

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


def serve(io: AppIo, app: ClientApp, context: Context) -> int:
    """Answer messages until the run ends; returns the exit code."""
    while True:
        proto, active = io.pull_message(POLL_WAIT)
        if proto is None:
            if not active:
                log.debug("run %d ended", context.run_id)
                return 0
            continue
        message = io.decode(proto)
        reply = app(message, context)
        io.push_reply(reply, context)


def refuse(io: AppIo, context: Context, reason: str) -> None:
    """The app cannot load: answer every waiting message with the reason."""
    wait = 0.5
    while True:
        proto, _ = io.pull_message(wait)
        if proto is None:
            return
        received = restore_message(metadata_from_proto(proto.metadata), content=RecordDict())
        error = Error(ErrorCode.LOAD_CLIENT_APP_EXCEPTION, reason)
        io.push_reply(Message(error=error, reply_to=received), context)
        wait = 0.2


def load_app(inputs: cpb.ClientPullAppInputsResponse) -> ClientApp:
    try:
        app_dir = install(inputs.fab.content, inputs.fab.hash)
        reference = load_app_config(app_dir).clientapp
    except CorollaError as exc:
        raise AppError(str(exc)) from exc
    return load_component(app_dir, reference, ClientApp)


def run(config: ClientAppProcessConfig) -> int:
    channel = create_channel(
        config.address, insecure=config.insecure, root_certificates=config.root_certificates
    )
    io = AppIo(channel, config.token)
    try:
        inputs = io.pull_inputs()
        context = io.context(inputs)
        with LogForwarder(io.push_logs):
            try:
                app = load_app(inputs)
            except AppError as exc:
                log.error("ClientApp of run %d cannot be loaded: %s", context.run_id, exc)
                refuse(io, context, f"ClientApp cannot be loaded: {exc}")
                return 1
            return serve(io, app, context)
    except CorollaError as exc:
        log.error("flwr-clientapp stops: %s", exc)
        return 1
    finally:
        channel.close()


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
    _exit_with_parent()
    sys.exit(run(config))


if __name__ == "__main__":
    main()
