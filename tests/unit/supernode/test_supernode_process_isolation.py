"""Isolation `process`: a SuperNode (in this process) against a real SuperLink, with
`flwr-clientapp` processes started from outside, the way an operator would."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from real_superlink import Link
from supernode_fakes import (
    APPIO_SECRET,
    CLIENT_APP,
    AppProcesses,
    make_fab,
    wait_for,
)

from corolla.common.appio import SECRET_ENV
from corolla.common.grpc import create_channel
from corolla.common.tls import ServerTls
from corolla.deploy.certs import generate
from corolla.proto.v1 import clientappio_pb2 as cpb
from corolla.proto.v1 import clientappio_pb2_grpc
from corolla.records import ErrorCode
from corolla.supernode.node import SuperNode

pytestmark = pytest.mark.timeout(60)

StartNode = Callable[..., SuperNode]
HEARTBEAT_TIMEOUT = 4.0  # flwr-clientapp beats every second: a 4x margin on a busy machine


def process_node(start_node: StartNode, **overrides: object) -> SuperNode:
    settings: dict[str, object] = {
        "isolation": "process",
        "appio_secret": APPIO_SECRET,
        "app_heartbeat_timeout": HEARTBEAT_TIMEOUT,
        "app_attach_timeout": 30.0,
    }
    return start_node(**{**settings, **overrides})


def test_attached_app_process_serves_a_run_warm_and_stays_attached_while_idle(
    link: Link,
    start_node: StartNode,
    app_fab: tuple[bytes, str],
    app_processes: AppProcesses,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_id = link.add_run(app_fab)
    node = process_node(start_node)
    node_id = link.wait_node()
    waiting = link.send(run_id, node_id)  # queued before any app process exists
    assert wait_for(lambda: "none is attached" in caplog.text, 5), caplog.text
    assert node.clientappio_address in caplog.text  # the warning says where to attach

    app = app_processes.start(node.clientappio_address, "--insecure")
    first = link.reply_to(waiting)
    time.sleep(HEARTBEAT_TIMEOUT + 0.5)  # idle: only heartbeats show it is alive
    second = link.reply_to(link.send(run_id, node_id))

    assert not first.has_error() and not second.has_error()
    assert first.content["out"]["pid"] == second.content["out"]["pid"] == app.pid
    assert second.content["out"]["count"] == 2  # context state kept on the SuperNode
    assert dict(first.content["node"]) == {"partition-id": 1, "dataset": "mnist"}
    expected = f"[node {node_id}] INFO testapp: handled message 2"
    assert wait_for(lambda: expected in link.log_lines()), link.log_lines()
    assert "stopped responding" not in caplog.text
    assert app.poll() is None


def test_one_app_process_serves_consecutive_runs_with_fresh_modules_then_max_runs_exits_0(
    link: Link, start_node: StartNode, app_processes: AppProcesses, tmp_path: Path
) -> None:
    # Two FABs whose ClientApp has the same module name but different code.
    first_run = link.add_run(make_fab(tmp_path / "one", CLIENT_APP))
    new_version = CLIENT_APP.replace('APP_VERSION = "v1"', 'APP_VERSION = "v2"')
    second_run = link.add_run(make_fab(tmp_path / "two", new_version))
    node = process_node(start_node)
    node_id = link.wait_node()
    app = app_processes.start(node.clientappio_address, "--insecure", "--max-runs", "2")

    first = link.reply_to(link.send(first_run, node_id))
    assert first.content["env"]["version"] == "v1"
    link.send(first_run, node_id, action="hang")  # the app call that will be abandoned
    assert wait_for(lambda: any("hanging now" in line for line in link.log_lines()), 15)
    link.finish(first_run)  # the run ends while its app call hangs

    second = link.reply_to(link.send(second_run, node_id))
    assert not second.has_error(), second.error
    assert second.content["env"]["version"] == "v2"  # not the cached module of run 41
    assert second.content["out"]["pid"] == app.pid
    assert second.content["out"]["count"] == 1  # run 42's own context
    assert "abandoned message" in app_processes.output(app)

    link.finish(second_run)
    assert app.wait(20) == 0, app_processes.output(app)
    assert wait_for(
        lambda: node._runs.get(first_run) is None and node._runs.get(second_run) is None, 10
    )


def test_killed_app_process_gives_an_error_reply_and_a_new_one_takes_over(
    link: Link,
    start_node: StartNode,
    app_fab: tuple[bytes, str],
    app_processes: AppProcesses,
) -> None:
    run_id = link.add_run(app_fab)
    node = process_node(start_node)
    node_id = link.wait_node()
    victim = app_processes.start(node.clientappio_address, "--insecure")
    first = link.reply_to(link.send(run_id, node_id))
    assert first.content["out"]["pid"] == victim.pid

    hanging = link.send(run_id, node_id, action="hang")
    assert wait_for(lambda: any("hanging now" in line for line in link.log_lines()), 15)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    killed_at = time.monotonic()
    failed = link.reply_to(hanging)
    assert failed.has_error()
    assert failed.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert failed.error.reason == "flwr-clientapp process stopped responding"
    assert time.monotonic() - killed_at > HEARTBEAT_TIMEOUT - 1.0  # not before the timeout

    waiting = link.send(run_id, node_id)  # the node keeps serving: this waits for a process
    successor = app_processes.start(node.clientappio_address, "--insecure")
    after = link.reply_to(waiting)
    assert not after.has_error()
    assert after.content["out"]["pid"] == successor.pid
    assert after.content["out"]["count"] == 2  # state pushed after message 1 survived


def test_message_gets_an_error_reply_when_no_app_process_attaches(
    link: Link,
    start_node: StartNode,
    app_fab: tuple[bytes, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_id = link.add_run(app_fab)
    process_node(start_node, app_attach_timeout=1.0)
    node_id = link.wait_node()
    started = time.monotonic()
    reply = link.reply_to(link.send(run_id, node_id))
    waited = time.monotonic() - started
    assert reply.has_error()
    assert reply.error.code == ErrorCode.LOAD_CLIENT_APP_EXCEPTION
    assert reply.error.reason == (
        "no flwr-clientapp process attached to this SuperNode within 1 s (isolation process)"
    )
    assert 1.0 <= waited < 5
    assert "none is attached" in caplog.text  # the warning while it waited


def test_wrong_or_missing_secret_is_refused(
    link: Link, start_node: StartNode, app_processes: AppProcesses
) -> None:
    node = process_node(start_node)
    link.wait_node()
    command = [
        sys.executable,
        "-m",
        "corolla.runtime.clientapp",
        "--insecure",
        "--clientappio-api-address",
        node.clientappio_address,
    ]
    wrong = subprocess.run(
        command,
        env=app_processes.env(**{SECRET_ENV: "not-the-secret-at-all"}),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert wrong.returncode == 5
    assert wrong.stderr.count("\n") == 1, wrong.stderr
    assert "refused this process: wrong AppIo secret" in wrong.stderr

    env = app_processes.env()
    del env[SECRET_ENV]
    missing = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "no AppIo secret" in missing.stderr

    channel = create_channel(node.clientappio_address, insecure=True)
    try:
        stub = clientappio_pb2_grpc.ClientAppIoStub(channel)
        for secret in ("", "not-the-secret-at-all"):
            with pytest.raises(grpc.RpcError) as info:
                stub.RequestRun(cpb.ClientRequestRunRequest(secret=secret), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        channel.close()


def test_subprocess_isolation_refuses_request_run_to_everyone(
    link: Link, start_node: StartNode
) -> None:
    node = start_node()  # isolation subprocess
    channel = create_channel(node.clientappio_address, insecure=True)
    try:
        stub = clientappio_pb2_grpc.ClientAppIoStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.RequestRun(cpb.ClientRequestRunRequest(secret=APPIO_SECRET), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        channel.close()


@pytest.mark.parametrize("isolation", ["process", "subprocess"])
def test_tls_on_the_fleet_connection_and_the_clientappio_api(
    isolation: str,
    start_node: StartNode,
    app_fab: tuple[bytes, str],
    app_processes: AppProcesses,
    tmp_path: Path,
) -> None:
    certs = generate(tmp_path / "certs")
    tls = ServerTls.from_files(certs.server_cert, certs.server_key)
    secure = Link(tls=tls)
    try:
        run_id = secure.add_run(app_fab)
        node = start_node(
            superlink=secure.address,
            insecure=False,
            root_certificates=certs.ca_cert.read_bytes(),
            clientappio_tls=tls,
            isolation=isolation,
            appio_secret=APPIO_SECRET if isolation == "process" else None,
        )
        node_id = secure.wait_node()
        if isolation == "process":
            app_processes.start(node.clientappio_address, "--root-certificates", str(certs.ca_cert))
        reply = secure.reply_to(secure.send(run_id, node_id))
        assert not reply.has_error(), reply.error

        plaintext = create_channel(node.clientappio_address, insecure=True)
        try:
            stub = clientappio_pb2_grpc.ClientAppIoStub(plaintext)
            with pytest.raises(grpc.RpcError) as info:
                stub.RequestRun(cpb.ClientRequestRunRequest(secret=APPIO_SECRET), timeout=3)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            plaintext.close()
    finally:
        secure.stop()


def test_exposed_plaintext_clientappio_is_warned_about(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        start_node(clientappio_address="0.0.0.0:0")
    assert "ClientAppIo API bound to 0.0.0.0:0 without TLS" in caplog.text


def test_app_process_waits_for_its_supernode_and_outlives_a_restart(
    link: Link,
    start_node: StartNode,
    app_fab: tuple[bytes, str],
    app_processes: AppProcesses,
) -> None:
    with socket.socket() as probe:  # a free port with nothing listening on it yet
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    app = app_processes.start(address, "--insecure")
    time.sleep(1.0)  # it backs off while nothing answers
    assert app.poll() is None

    run_id = link.add_run(app_fab)
    node = process_node(start_node, clientappio_address=address)
    node_id = link.wait_node()
    first = link.reply_to(link.send(run_id, node_id))
    assert first.content["out"]["pid"] == app.pid
    node.stop()

    process_node(start_node, clientappio_address=address)  # a new SuperNode, same address
    assert wait_for(lambda: node_id not in link.online() and len(link.online()) == 1, 10)
    new_node_id = link.wait_node()
    again = link.reply_to(link.send(run_id, new_node_id))
    assert not again.has_error(), again.error
    assert again.content["out"]["pid"] == app.pid  # the same process reconnected
    assert "cannot ask the SuperNode" in app_processes.output(app)


def test_app_that_cannot_load_is_refused_for_its_run_and_the_process_serves_the_next(
    link: Link,
    start_node: StartNode,
    app_fab: tuple[bytes, str],
    app_processes: AppProcesses,
    tmp_path: Path,
) -> None:
    broken = link.add_run(make_fab(tmp_path, "import not_a_real_module_xyz\n", name="brokenapp"))
    run_id = link.add_run(app_fab)
    node = process_node(start_node)
    node_id = link.wait_node()
    app = app_processes.start(node.clientappio_address, "--insecure")
    for _ in range(2):  # every message of the run, not only the first
        reply = link.reply_to(link.send(broken, node_id))
        assert reply.error.code == ErrorCode.LOAD_CLIENT_APP_EXCEPTION
        assert "not_a_real_module_xyz" in reply.error.reason
    link.finish(broken)
    served = link.reply_to(link.send(run_id, node_id))
    assert not served.has_error() and served.content["out"]["pid"] == app.pid
