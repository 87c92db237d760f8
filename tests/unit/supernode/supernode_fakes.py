"""Helpers for the SuperNode tests: a fake Fleet API (real gRPC on loopback) and a tiny app."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from corolla.common.appio import SECRET_ENV
from corolla.common.errors import NotFound
from corolla.common.grpc import abort_on_error, bind, create_server
from corolla.common.transfer import add_service, receive_objects, send_objects
from corolla.fab import build_fab
from corolla.proto.v1 import fleet_pb2 as fpb
from corolla.proto.v1 import message_pb2 as mpb
from corolla.proto.v1 import objects_pb2 as opb
from corolla.proto.v1 import run_pb2 as rpb
from corolla.records import ArrayRecord, ConfigRecord, Message, RecordDict
from corolla.records.serde import user_config_to_proto
from corolla.records.wire import decode_messages, encode_messages

PYPROJECT = """
[project]
name = "{name}"
version = "1.0.0"

[tool.flwr.app]
publisher = "tests"

[tool.flwr.app.components]
serverapp = "{module}:app"
clientapp = "{module}:app"

[tool.flwr.app.config]
lr = 0.5
"""

CLIENT_APP = """
import logging
import os
import time

from corolla.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp

APP_VERSION = "v1"
app = ClientApp()
log = logging.getLogger("testapp")


@app.train()
def train(msg, context):
    count = context.state["counter"]["count"] + 1 if "counter" in context.state else 1
    context.state["counter"] = MetricRecord({"count": count})
    action = msg.content["cfg"]["action"]
    if action == "raise":
        raise RuntimeError("boom from the app")
    if action == "hang":
        print("hanging now", flush=True)
        time.sleep(120)
    log.info("handled message %d", count)
    content = RecordDict(
        {
            "out": MetricRecord({"pid": os.getpid(), "count": count}),
            "node": ConfigRecord(dict(context.node_config)),
            "run": ConfigRecord(dict(context.run_config)),
            "env": ConfigRecord(
                {
                    "version": APP_VERSION,
                    "home": os.environ.get("COROLLA_HOME", ""),
                    "cwd": os.getcwd(),
                }
            ),
        }
    )
    if "arrays" in msg.content:
        doubled = [a * 2 for a in msg.content["arrays"].to_numpy_ndarrays()]
        content["arrays"] = ArrayRecord.from_numpy_ndarrays(doubled)
    return Message(content, reply_to=msg)
"""


class FakeFleet:
    """An in-memory Fleet API: hands out messages, collects replies, logs and heartbeats."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.nodes: set[int] = set()
        self.next_node_id = 1000
        self.create_requests: list[fpb.CreateNodeRequest] = []
        self.deleted: list[int] = []
        self.heartbeats: list[fpb.HeartbeatRequest] = []
        self.runs: dict[int, rpb.Run] = {}
        self.fabs: dict[str, bytes] = {}
        self.get_run_calls = 0
        self.objects: dict[str, memoryview] = {}
        self.pending: list[mpb.Message] = []
        self.replies: list[mpb.Message] = []
        self.logs: list[tuple[int, int, str]] = []
        self.finished: set[int] = set()
        self.address = ""
        self.server: grpc.Server | None = None

    # -- test helpers ---------------------------------------------------------------------------

    def add_run(self, run_id: int, fab: bytes, fab_hash: str) -> None:
        self.fabs[fab_hash] = fab
        self.runs[run_id] = rpb.Run(
            run_id=run_id,
            fab_id="tests/app",
            fab_version="1.0.0",
            fab_hash=fab_hash,
            run_config=user_config_to_proto({"lr": 0.5}),
        )

    def send(
        self, run_id: int, node_id: int, action: str = "ok", arrays: list[Any] | None = None
    ) -> str:
        content = RecordDict({"cfg": ConfigRecord({"action": action})})
        if arrays is not None:
            content["arrays"] = ArrayRecord.from_numpy_ndarrays(arrays)
        message = Message(content, dst_node_id=node_id, message_type="train")
        message.metadata.run_id = run_id
        protos, objects = encode_messages([message])
        with self.cond:
            self.objects.update({k: memoryview(bytes(v)) for k, v in objects.items()})
            self.pending.append(protos[0])
            self.cond.notify_all()
        return message.metadata.message_id

    def reply_to(self, message_id: str, timeout: float = 20.0) -> Message:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for proto in self.replies:
                    if proto.metadata.reply_to_message_id == message_id:
                        return decode_messages([proto], lambda ids: self.objects)[0]
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no reply to {message_id} within {timeout} s"
                self.cond.wait(remaining)

    def wait_node(self, timeout: float = 20.0) -> int:
        assert wait_for(lambda: bool(self.nodes), timeout), "no node registered"
        return max(self.nodes)

    def log_lines(self) -> list[str]:
        with self.cond:
            return [line for _, _, line in self.logs]

    def forget_nodes(self) -> None:
        """What a SuperLink restart without durable state looks like to its nodes."""
        with self.cond:
            self.nodes.clear()

    def _known(self, node_id: int) -> None:
        if node_id not in self.nodes:
            raise NotFound(f"node {node_id} is not registered")

    # -- Fleet API ------------------------------------------------------------------------------

    @abort_on_error
    def CreateNode(self, request: fpb.CreateNodeRequest, context: Any) -> fpb.CreateNodeResponse:
        with self.cond:
            self.create_requests.append(request)
            node_id = request.requested_node_id or self.next_node_id
            self.next_node_id += 1
            self.nodes.add(node_id)
            self.cond.notify_all()
        return fpb.CreateNodeResponse(
            node_id=node_id, heartbeat_interval=request.heartbeat_interval
        )

    @abort_on_error
    def DeleteNode(self, request: fpb.DeleteNodeRequest, context: Any) -> fpb.DeleteNodeResponse:
        with self.cond:
            self.deleted.append(request.node_id)
            self.nodes.discard(request.node_id)
        return fpb.DeleteNodeResponse()

    @abort_on_error
    def Heartbeat(self, request: fpb.HeartbeatRequest, context: Any) -> fpb.HeartbeatResponse:
        with self.cond:
            self._known(request.node_id)
            self.heartbeats.append(request)
            finished = [r for r in request.active_run_ids if r in self.finished]
        return fpb.HeartbeatResponse(success=True, finished_run_ids=finished)

    @abort_on_error
    def PullMessages(
        self, request: fpb.FleetPullMessagesRequest, context: Any
    ) -> fpb.FleetPullMessagesResponse:
        deadline = time.monotonic() + min(request.wait_seconds, 30)
        with self.cond:
            while True:
                self._known(request.node_id)
                mine = [m for m in self.pending if m.metadata.dst_node_id == request.node_id]
                remaining = deadline - time.monotonic()
                if mine or remaining <= 0:
                    break
                self.cond.wait(remaining)
            for message in mine:
                self.pending.remove(message)
        return fpb.FleetPullMessagesResponse(messages=mine)

    @abort_on_error
    def PushMessages(
        self, request: fpb.FleetPushMessagesRequest, context: Any
    ) -> fpb.FleetPushMessagesResponse:
        with self.cond:
            self._known(request.node_id)
            self.replies.extend(request.messages)
            self.cond.notify_all()
        return fpb.FleetPushMessagesResponse(
            message_ids=[m.metadata.message_id for m in request.messages]
        )

    @abort_on_error
    def GetRun(self, request: rpb.GetRunRequest, context: Any) -> rpb.GetRunResponse:
        self.get_run_calls += 1
        if request.run_id not in self.runs:
            raise NotFound(f"run {request.run_id} not found")
        return rpb.GetRunResponse(run=self.runs[request.run_id])

    @abort_on_error
    def GetFab(self, request: rpb.GetFabRequest, context: Any) -> rpb.GetFabResponse:
        return rpb.GetFabResponse(
            fab=rpb.Fab(hash=request.fab_hash, content=self.fabs[request.fab_hash])
        )

    @abort_on_error
    def PushLogs(
        self, request: fpb.FleetPushLogsRequest, context: Any
    ) -> fpb.FleetPushLogsResponse:
        with self.cond:
            self.logs.extend((request.node_id, request.run_id, line) for line in request.lines)
            self.cond.notify_all()
        return fpb.FleetPushLogsResponse()

    @abort_on_error
    def PushObjects(
        self, request_iterator: Iterator[bytes], context: Any
    ) -> opb.PushObjectsResponse:
        return receive_objects(request_iterator, self.objects.__setitem__)

    @abort_on_error
    def PullObjects(self, request: opb.PullObjectsRequest, context: Any) -> Iterator[bytes]:
        def read(oid: str, size: int) -> Iterator[bytes]:
            data = self.objects[oid]
            for offset in range(0, data.nbytes, size):
                yield bytes(data[offset : offset + size])

        return send_objects(request.object_ids, lambda oid: self.objects[oid].nbytes, read)

    @abort_on_error
    def MissingObjects(
        self, request: opb.MissingObjectsRequest, context: Any
    ) -> opb.MissingObjectsResponse:
        return opb.MissingObjectsResponse(
            object_ids=[oid for oid in request.object_ids if oid not in self.objects]
        )


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie waiting for someone else to reap it has stopped running
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def serve_fleet(
    fleet: FakeFleet,
    address: str = "127.0.0.1:0",
    credentials: grpc.ServerCredentials | None = None,
) -> grpc.Server:
    server = create_server(max_workers=16)
    add_service(server, fpb.DESCRIPTOR.services_by_name["Fleet"], fleet)
    port = bind(server, address, credentials)
    fleet.address = f"127.0.0.1:{port}"
    fleet.server = server
    server.start()
    return server


def make_fab(
    root: Path, module_source: str = CLIENT_APP, name: str = "testapp"
) -> tuple[bytes, str]:
    app_dir = root / name
    app_dir.mkdir(parents=True)
    module = f"{name}_client"
    (app_dir / "pyproject.toml").write_text(PYPROJECT.format(name=name, module=module))
    (app_dir / f"{module}.py").write_text(textwrap.dedent(module_source))
    built = build_fab(app_dir)
    return built.data, built.fab_hash


APPIO_SECRET = "the-appio-secret-of-these-tests"


class AppProcesses:
    """Externally managed `flwr-clientapp` processes (isolation process); all reaped at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[subprocess.Popen[str]] = []

    def env(self, **extra: str) -> dict[str, str]:
        """A minimal environment of its own: PATH, its own COROLLA_HOME, the secret."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "COROLLA_HOME": str(self.root / "app-home"),
            "PYTHONUNBUFFERED": "1",
            SECRET_ENV: APPIO_SECRET,
            **extra,
        }

    def start(
        self,
        address: str,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[str]:
        log_path = self.root / f"clientapp-{len(self.started)}.log"
        with log_path.open("w") as log_file:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "corolla.runtime.clientapp",
                    "--clientappio-api-address",
                    address,
                    *args,
                ],
                env=self.env() if env is None else env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.started.append(process)
        return process

    def output(self, process: subprocess.Popen[str]) -> str:
        return (self.root / f"clientapp-{self.started.index(process)}.log").read_text()

    def reap(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(10)
