"""Isolation ``process`` on the SuperLink side: operator-run flwr-serverapp processes."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from integration_helpers import APPS, Cli

from corolla.common.config import read_ready_file
from corolla.deploy.certs import generate
from corolla.deploy.local import LocalFederation, app_for_federation, terminate
from corolla.proto.v1 import serverappio_pb2 as spb
from corolla.proto.v1.serverappio_pb2_grpc import ServerAppIoStub

pytestmark = pytest.mark.timeout(120)
SERVERAPP = [sys.executable, "-m", "corolla.runtime.serverapp"]


def link_only(tmp_path: Path, *args: str) -> LocalFederation:
    fed = LocalFederation(
        tmp_path / "fed",
        num_nodes=0,
        isolation="process",
        superlink_args=["--app-attach-timeout", "2", "--app-heartbeat-timeout", "3", *args],
    )
    fed.workdir.mkdir(parents=True, exist_ok=True)
    fed.start_superlink()
    return fed


@pytest.fixture
def link(tmp_path: Path) -> Iterator[LocalFederation]:
    fed = link_only(tmp_path)
    try:
        yield fed
    finally:
        fed.stop()


@pytest.fixture
def waiter(link: LocalFederation, tmp_path: Path) -> Cli:
    return Cli(link, app_for_federation(APPS / "waiter", tmp_path / "waiter", link.exec))


def test_run_without_app_process_waits_visibly(tmp_path: Path) -> None:
    """The timeout itself runs on a fake clock in tests/unit/superlink/test_dispatcher.py."""
    fed = link_only(tmp_path, "--app-attach-timeout", "600")
    try:
        waiter = Cli(fed, app_for_federation(APPS / "waiter", tmp_path / "waiter", fed.exec))
        run_id = waiter.submit()
        deadline = time.monotonic() + 30
        while "waiting for a flwr-serverapp process" not in str(waiter.run_info(run_id)["details"]):
            assert time.monotonic() < deadline, waiter.run_info(run_id)
            time.sleep(0.1)
        assert waiter.run_info(run_id)["status"] == "pending"
        assert waiter("stop", str(run_id), str(waiter.app), "local").returncode == 0
        assert waiter.wait_for(run_id, "finished")["sub_status"] == "stopped"
    finally:
        fed.stop()


def test_one_app_process_serves_consecutive_runs_then_exits(
    link: LocalFederation, waiter: Cli
) -> None:
    app = link.start_app_process("serverapp", link.serverappio, ["--max-runs", "2"])
    first = waiter.submit("marker='one'")
    assert waiter.wait_for(first, "finished")["sub_status"] == "completed"
    second = waiter.submit("marker='two'")
    assert waiter.wait_for(second, "finished")["sub_status"] == "completed"
    assert app.process.wait(timeout=30) == 0
    pids = set(re.findall(r"waiter marker=\w+ pid=(\d+)", app.output()))
    assert pids == {str(app.process.pid)}, app.output()
    log = waiter("log", str(second), str(waiter.app), "local")
    assert "waiter marker=two" in log.stdout


def test_app_process_killed_mid_run_fails_the_run_and_a_new_one_serves(
    link: LocalFederation, waiter: Cli
) -> None:
    app = link.start_app_process("serverapp", link.serverappio)
    run_id = waiter.submit("sleep=60.0")
    deadline = time.monotonic() + 30
    while "waiter marker" not in app.output():
        assert time.monotonic() < deadline, app.output()
        time.sleep(0.1)
    app.process.kill()
    app.process.wait(timeout=10)
    info = waiter.wait_for(run_id, "finished")
    assert info["sub_status"] == "failed"
    assert "stopped responding" in str(info["details"])
    link.start_app_process("serverapp", link.serverappio)
    next_run = waiter.submit()
    assert waiter.wait_for(next_run, "finished")["sub_status"] == "completed"


def test_wrong_or_missing_secret_is_refused(link: LocalFederation, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("x" * 40)
    env = {**link.env}
    env.pop("COROLLA_APPIO_SECRET", None)
    base = [*SERVERAPP, "--serverappio-api-address", link.serverappio, "--insecure"]
    refused = subprocess.run(
        [*base, "--appio-secret-file", str(wrong)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 5
    lines = refused.stderr.strip().splitlines()
    assert lines[-1] == "flwr-serverapp: refused by the SuperLink: wrong AppIo secret"
    assert "Traceback" not in refused.stderr
    missing = subprocess.run(base, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert missing.returncode == 2
    assert "no AppIo secret" in missing.stderr
    with grpc.insecure_channel(link.serverappio) as channel:
        stub = ServerAppIoStub(channel)
        for secret in ("", "y" * 40):
            with pytest.raises(grpc.RpcError) as info:
                stub.RequestRun(spb.RequestRunRequest(secret=secret, wait_seconds=0), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            stub.PullAppInputs(spb.PullAppInputsRequest(token="forged"), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_subprocess_mode_refuses_request_run_to_everyone(tmp_path: Path) -> None:
    fed = LocalFederation(tmp_path / "fed", num_nodes=0)
    fed.workdir.mkdir(parents=True)
    fed.start_superlink()
    try:
        with (
            grpc.insecure_channel(fed.serverappio) as channel,
            pytest.raises(grpc.RpcError) as info,
        ):
            ServerAppIoStub(channel).RequestRun(spb.RequestRunRequest(secret="z" * 43), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        fed.stop()


def test_tls_on_the_serverappio_api(tmp_path: Path) -> None:
    certs = generate(tmp_path / "certs")
    fed = LocalFederation(tmp_path / "fed", num_nodes=0, isolation="process")
    fed.workdir.mkdir(parents=True)
    # The LocalFederation speaks plaintext to its own daemons; start this one by hand.
    secret = tmp_path / "secret"
    secret.write_text("s" * 40)
    log_path = tmp_path / "superlink.log"
    ready_file = tmp_path / "superlink.ready.json"
    with log_path.open("wb") as log:
        link = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "corolla.superlink.main",
                "--ssl-certfile",
                str(certs.server_cert),
                "--ssl-keyfile",
                str(certs.server_key),
                "--ssl-ca-certfile",
                str(certs.ca_cert),
                "--database",
                ":memory:",
                "--serverappio-api-address",
                "127.0.0.1:0",
                "--fleet-api-address",
                "127.0.0.1:0",
                "--exec-api-address",
                "127.0.0.1:0",
                "--isolation",
                "process",
                "--appio-secret-file",
                str(secret),
                "--ready-file",
                str(ready_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=fed.env,
        )
    try:
        deadline = time.monotonic() + 30
        while (ready := read_ready_file(ready_file)) is None:
            assert time.monotonic() < deadline and link.poll() is None, log_path.read_text()
            time.sleep(0.05)
        address = ready["serverappio"]
        assert f"serverappio={address} (TLS)" in log_path.read_text()
        roots = certs.ca_cert.read_bytes()
        with grpc.secure_channel(address, grpc.ssl_channel_credentials(roots)) as channel:
            reply = ServerAppIoStub(channel).RequestRun(
                spb.RequestRunRequest(secret="s" * 40, wait_seconds=0), timeout=10
            )
            assert reply.run_id == 0  # authenticated over TLS; no run waiting
        with grpc.insecure_channel(address) as channel:
            with pytest.raises(grpc.RpcError) as info:
                ServerAppIoStub(channel).RequestRun(
                    spb.RequestRunRequest(secret="s" * 40), timeout=5
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        terminate(link)
