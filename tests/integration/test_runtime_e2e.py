"""The deployment runtime end to end: real SuperLink and SuperNodes, driven by the flwr CLI."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from integration_helpers import APPS, FLWR, Cli, children_of, serving, started_run_id

from corolla.deploy.local import LocalFederation, app_for_federation, terminate
from corolla.proto.v1 import exec_pb2, run_pb2
from corolla.proto.v1.exec_pb2_grpc import ExecStub

pytestmark = pytest.mark.timeout(180)


def test_full_run_through_the_cli(probe_cli: Cli, federation: LocalFederation) -> None:
    result = probe_cli("run", str(probe_cli.app), "local", "--stream")
    assert result.returncode == 0, result.stdout + result.stderr
    # The nodes hear of the run's end on their long poll, not on the next heartbeat (5 s),
    # and end its ClientApp processes.
    node_pids = [node.process.pid for node in federation.supernodes]
    deadline = time.monotonic() + 3
    while any(serving(children_of(pid)) for pid in node_pids):  # (their spares stay)
        assert time.monotonic() < deadline, "ClientApp processes outlived their run"
        time.sleep(0.05)
    assert "probe final=2.0" in result.stdout  # two rounds, each node adds 1: FedAvg gives +1
    # The ClientApp processes stayed warm: one process served both rounds on each node.
    calls = re.findall(r"probe round=(\d+) calls=(\d+)", result.stdout)
    assert calls == [("1", "1"), ("2", "2")], result.stdout
    run_id = started_run_id(result.stdout)
    info = probe_cli.run_info(run_id)
    assert (info["status"], info["sub_status"]) == ("finished", "completed")
    log = probe_cli("log", str(run_id), str(probe_cli.app), "local")
    assert log.returncode == 0
    assert "probe final=2.0" in log.stdout
    assert re.search(r"\[node \d+\].*probe client pid=", log.stdout), log.stdout


def test_large_model_travels_as_chunked_objects(probe_cli: Cli) -> None:
    # 3 M float64 parameters = 24 MB: far above the inline limit and gRPC's message size,
    # so the model goes through PushObjects/PullObjects in both directions on every hop.
    result = probe_cli(
        "run", str(probe_cli.app), "local", "--stream", "--run-config", "params=3000000"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "probe final=2.0 size=3000000 all-equal=True" in result.stdout


def test_two_runs_in_sequence_and_two_at_once(probe_cli: Cli) -> None:
    for marker in ("first", "second"):
        result = probe_cli(
            "run", str(probe_cli.app), "local", "--stream", "--run-config", f"marker='{marker}'"
        )
        assert result.returncode == 0, result.stderr
        assert f"probe marker={marker}" in result.stdout
    together = [
        probe_cli.start(
            "run", str(probe_cli.app), "local", "--stream", "--run-config", f"marker='c{i}'"
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in together]
    for index, (process, (out, err)) in enumerate(zip(together, outputs, strict=True)):
        assert process.returncode == 0, out + err
        assert f"probe marker=c{index}" in out
        assert "probe final=2.0" in out
    assert sum(r["sub_status"] == "completed" for r in probe_cli.runs()) == 4


def test_stop_a_running_run_ends_its_app_processes(
    probe_cli: Cli, federation: LocalFederation
) -> None:
    result = probe_cli(
        "run",
        str(probe_cli.app),
        "local",
        "--run-config",
        "round-sleep=2.0 num-server-rounds=50",
    )
    assert result.returncode == 0, result.stderr
    run_id = started_run_id(result.stdout)
    probe_cli.wait_for(run_id, "running")
    time.sleep(1.0)  # a round is in progress on the nodes
    assert federation.superlink is not None
    link_pid = federation.superlink.process.pid
    assert serving(children_of(link_pid)), "the ServerApp process should be running"
    node_pids = [node.process.pid for node in federation.supernodes]
    assert all(serving(children_of(pid)) for pid in node_pids), "ClientApps should be running"

    stop = probe_cli("stop", str(run_id), str(probe_cli.app), "local")
    assert stop.returncode == 0, stop.stderr
    info = probe_cli.wait_for(run_id, "finished")
    assert info["sub_status"] == "stopped"
    assert "stopped by user" in str(info["details"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        serving(children_of(link_pid)) or any(serving(children_of(pid)) for pid in node_pids)
    ):
        time.sleep(0.2)
    assert not serving(children_of(link_pid))  # the spares wait for the next run
    assert not any(serving(children_of(pid)) for pid in node_pids)
    follow = probe_cli("log", str(run_id), str(probe_cli.app), "local", "--follow")
    assert follow.returncode == 6  # the run was stopped


def test_serverapp_that_raises_fails_the_run_with_its_reason(probe_cli: Cli) -> None:
    result = probe_cli(
        "run", str(probe_cli.app), "local", "--stream", "--run-config", "server-raise=true"
    )
    assert result.returncode == 1
    run_id = started_run_id(result.stdout)
    info = probe_cli.run_info(run_id)
    assert info["sub_status"] == "failed"
    assert "probe ServerApp failure on purpose" in str(info["details"])
    table = probe_cli("ls", str(probe_cli.app), "local")
    assert "probe ServerApp failure on purpose" in table.stdout
    log = probe_cli("log", str(run_id), str(probe_cli.app), "local")
    assert "ValueError: probe ServerApp failure on purpose" in log.stdout


def test_clientapp_that_raises_gives_error_reply_and_round_goes_on(probe_cli: Cli) -> None:
    result = probe_cli(
        "run", str(probe_cli.app), "local", "--stream", "--run-config", "client-raise-node=0"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "probe final=2.0" in result.stdout  # the other node's updates still count
    assert "probe ClientApp failure on purpose" in result.stdout  # the reason reaches the log


def test_supernode_killed_mid_run_and_restarted_rejoins(
    probe_cli: Cli, federation: LocalFederation
) -> None:
    run = probe_cli.start(
        "run",
        str(probe_cli.app),
        "local",
        "--stream",
        "--run-config",
        "round-sleep=0.5 num-server-rounds=8",
    )
    time.sleep(3.0)
    victim = federation.supernodes[1]
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=10)
    time.sleep(1.0)
    federation.supernodes[1] = federation.start_supernode(1)
    out, err = run.communicate(timeout=150)
    assert run.returncode == 0, out + err
    assert "probe final=" in out


def test_malformed_fabs_are_refused(federation: LocalFederation) -> None:
    with federation.channel(federation.exec) as channel:
        stub = ExecStub(channel)
        cases = {
            b"not a zip at all": "0" * 64,
            b"PK\x03\x04garbage": "1" * 64,
        }
        for content, fab_hash in cases.items():
            with pytest.raises(grpc.RpcError) as info:
                stub.StartRun(
                    exec_pb2.StartRunRequest(fab=run_pb2.Fab(hash=fab_hash, content=content)),
                    timeout=10,
                )
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad = b"PK\x05\x06" + b"\x00" * 18  # an empty zip: no manifest, no pyproject
        with pytest.raises(grpc.RpcError) as info:
            stub.StartRun(
                exec_pb2.StartRunRequest(
                    fab=run_pb2.Fab(hash=hashlib.sha256(bad).hexdigest(), content=bad)
                ),
                timeout=10,
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        runs = stub.ListRuns(exec_pb2.ListRunsRequest(), timeout=10).runs
        assert list(runs) == []


def test_unknown_run_ids(probe_cli: Cli) -> None:
    app = str(probe_cli.app)
    for args in (
        ["log", "42", app, "local"],
        ["stop", "42", app, "local"],
        ["ls", app, "local", "--run-id", "42"],
    ):
        result = probe_cli(*args)
        assert result.returncode == 3, (args, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr


def test_cli_against_a_superlink_that_is_not_running(tmp_path: Path) -> None:
    app = app_for_federation(APPS / "probe", tmp_path / "probe", "127.0.0.1:1")
    for args in (["run", str(app), "local"], ["ls", str(app), "local"]):
        result = subprocess.run(
            [str(FLWR), *args], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 4
        assert "cannot reach the SuperLink" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_daemons_stop_gracefully_on_sigterm(federation: LocalFederation) -> None:
    assert federation.superlink is not None
    processes = [federation.superlink.process, *(n.process for n in federation.supernodes)]
    for process in processes:
        assert terminate(process) == 0
    assert all(not os.path.exists(f"/proc/{p.pid}") for p in processes)
