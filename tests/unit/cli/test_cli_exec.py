"""`flwr run/ls/log/stop` end to end against a real gRPC server running a fake Exec servicer."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from corolla.cli.main import run_cli
from corolla.common.grpc import bind, create_server
from corolla.proto.v1 import exec_pb2, exec_pb2_grpc, run_pb2
from corolla.records.serde import user_config_from_proto, user_config_to_proto

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
TRACEBACK = 'Traceback (most recent call last):\n  File "task.py", line 3\nValueError: boom'
FLWR = Path(sys.executable).parent / "flwr"


class FakeExec(exec_pb2_grpc.ExecServicer):
    """Keeps runs in a dict; a followed run ends as ``outcome`` once its stream is open."""

    def __init__(self) -> None:
        self.runs: dict[int, run_pb2.Run] = {}
        self.logs: dict[int, list[str]] = {}
        self.start_requests: list[exec_pb2.StartRunRequest] = []
        self.time_remaining: dict[str, float | None] = {}
        self.outcome = ("completed", "")
        self.hold = False  # keep follow streams open until `release` is set
        self.release = threading.Event()
        self.end_stream_early = False  # end a follow stream before sending the run's end

    def add_run(self, status: str, sub_status: str = "", details: str = "", **times: float) -> int:
        run_id = len(self.runs) + 1
        self.runs[run_id] = run_pb2.Run(
            run_id=run_id,
            fab_id="acme/demo",
            fab_version="1.0.0",
            fab_hash="ab" * 32,
            status=run_pb2.RunStatus(status=status, sub_status=sub_status, details=details),
            federation="local",
            run_config=user_config_to_proto({"num-server-rounds": 3}),
        )
        for name, value in times.items():
            setattr(self.runs[run_id], name, value)
        self.logs[run_id] = [f"run {run_id}: starting", f"run {run_id}: round 1 done"]
        return run_id

    def _run(self, run_id: int, context: grpc.ServicerContext) -> run_pb2.Run:
        if run_id == 77:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "run 77 belongs to another user")
        run = self.runs.get(run_id)
        if run is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"run {run_id} not found")
        return run

    def _finish(self, run: run_pb2.Run, sub_status: str, details: str) -> None:
        run.status.CopyFrom(
            run_pb2.RunStatus(status="finished", sub_status=sub_status, details=details)
        )
        run.finished_at = T0 + 60
        self.logs[run.run_id] += [
            f"run {run.run_id}: round 2 done",
            f"run {run.run_id}: {sub_status}",
        ]

    def StartRun(
        self, request: exec_pb2.StartRunRequest, context: grpc.ServicerContext
    ) -> exec_pb2.StartRunResponse:
        self.time_remaining["StartRun"] = context.time_remaining()
        self.start_requests.append(request)
        run_id = self.add_run("running", pending_at=T0, starting_at=T0 + 1, running_at=T0 + 2)
        self.runs[run_id].override_config.CopyFrom(request.override_config)
        return exec_pb2.StartRunResponse(run_id=run_id)

    def StopRun(
        self, request: exec_pb2.StopRunRequest, context: grpc.ServicerContext
    ) -> exec_pb2.StopRunResponse:
        self.time_remaining["StopRun"] = context.time_remaining()
        run = self._run(request.run_id, context)
        if run.status.status == "finished":
            return exec_pb2.StopRunResponse(stopped=False)
        self._finish(run, "stopped", "stopped by user")
        return exec_pb2.StopRunResponse(stopped=True)

    def ListRuns(
        self, request: exec_pb2.ListRunsRequest, context: grpc.ServicerContext
    ) -> exec_pb2.ListRunsResponse:
        self.time_remaining["ListRuns"] = context.time_remaining()
        runs = [self._run(request.run_id, context)] if request.run_id else self.runs.values()
        return exec_pb2.ListRunsResponse(runs=list(runs), now=T0 + 100)

    def StreamLogs(
        self, request: exec_pb2.StreamLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[exec_pb2.StreamLogsResponse]:
        key = "StreamLogs(follow)" if request.follow else "StreamLogs"
        self.time_remaining[key] = context.time_remaining()
        run = self._run(request.run_id, context)
        logs = self.logs[run.run_id]
        yield exec_pb2.StreamLogsResponse(
            lines=logs[request.after :], next=len(logs), status=run.status
        )
        if not request.follow or run.status.status == "finished":
            return
        while self.hold and not self.release.wait(0.05):
            if not context.is_active():
                return
        sent = len(logs)
        self._finish(run, *self.outcome)
        if self.end_stream_early:
            return
        yield exec_pb2.StreamLogsResponse(lines=logs[sent:], next=len(logs), status=run.status)


@dataclass
class Env:
    fake: FakeExec
    app_dir: Path
    down_port: int  # nobody listens there


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PYPROJECT = """
[project]
name = "demo"
version = "1.0.0"

[tool.flwr.app]
publisher = "acme"

[tool.flwr.app.components]
serverapp = "demo.server_app:app"
clientapp = "demo.client_app:app"

[tool.flwr.app.config]
num-server-rounds = 3
learning-rate = 0.1
name = "x"

[tool.flwr.federations]
default = "local"

[tool.flwr.federations.local]
address = "127.0.0.1:{port}"
insecure = true
options.num-supernodes = 2

[tool.flwr.federations.down]
address = "127.0.0.1:{down_port}"
insecure = true
"""


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    fake = FakeExec()
    server = create_server(max_workers=8)
    exec_pb2_grpc.add_ExecServicer_to_server(fake, server)
    port = bind(server, "127.0.0.1:0", None)
    server.start()
    app_dir = tmp_path / "demo"
    (app_dir / "demo").mkdir(parents=True)
    down_port = free_port()
    (app_dir / "pyproject.toml").write_text(PYPROJECT.format(port=port, down_port=down_port))
    (app_dir / "demo" / "__init__.py").write_text("")
    (app_dir / "demo" / "server_app.py").write_text("app = None\n")
    (app_dir / "demo" / "client_app.py").write_text("app = None\n")
    try:
        yield Env(fake, app_dir, down_port)
    finally:
        fake.release.set()
        server.stop(0)


def flwr(capsys: pytest.CaptureFixture[str], *args: str | int | Path) -> tuple[int, str, str]:
    code = run_cli([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(err: str, prefix: str) -> None:
    assert err.startswith(prefix), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


# -- flwr run ------------------------------------------------------------------------------------


def test_run_sends_the_fab_and_the_checked_overrides(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = flwr(
        capsys,
        "run",
        env.app_dir,
        "--run-config",
        "num-server-rounds=5 learning-rate=1",
        "--run-config",
        "name='a b'",
    )
    assert (code, out, err) == (0, "Started run 1\n", "")
    [request] = env.fake.start_requests
    assert request.fab.hash == hashlib.sha256(request.fab.content).hexdigest()
    overrides = user_config_from_proto(request.override_config)
    assert overrides == {"num-server-rounds": 5, "learning-rate": 1.0, "name": "a b"}
    assert isinstance(overrides["learning-rate"], float)
    assert request.federation == "local"
    assert user_config_from_proto(request.federation_options) == {"options.num-supernodes": 2}
    remaining = env.fake.time_remaining["StartRun"]
    assert remaining is not None and remaining > 0


def test_run_with_a_bad_override_sends_nothing(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = flwr(capsys, "run", env.app_dir, "--run-config", "rounds=5")
    assert code == 2
    assert_one_line(err, "flwr run: unknown run-config key 'rounds' (known keys: ")
    assert env.fake.start_requests == []


def test_run_on_an_unknown_federation_names_the_available_ones(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = flwr(capsys, "run", env.app_dir, "prod")
    assert code == 2
    assert_one_line(err, "flwr run: unknown federation 'prod'")
    assert "(available: down, local)" in err


@pytest.mark.parametrize(
    ("outcome", "code", "final"),
    [
        (("completed", ""), 0, "Run 1 finished: completed\n"),
        (("failed", TRACEBACK), 1, "Run 1 finished: failed (ValueError: boom)\n"),
        (("stopped", "stopped by user"), 6, "Run 1 finished: stopped (stopped by user)\n"),
    ],
)
def test_run_stream_prints_the_logs_and_exits_with_the_outcome(
    env: Env,
    capsys: pytest.CaptureFixture[str],
    outcome: tuple[str, str],
    code: int,
    final: str,
) -> None:
    env.fake.outcome = outcome
    got, out, err = flwr(capsys, "run", env.app_dir, "--stream")
    assert got == code
    assert out == (
        "Started run 1\n"
        "run 1: starting\n"
        "run 1: round 1 done\n"
        "run 1: round 2 done\n"
        f"run 1: {outcome[0]}\n" + final
    )
    if code == 0:
        assert err == ""
    else:
        assert_one_line(err, "flwr run: run 1 ")
    remaining = env.fake.time_remaining["StreamLogs(follow)"]
    assert remaining is None or remaining > 1e9  # no deadline: the server ends it


# -- flwr ls -------------------------------------------------------------------------------------


def add_sample_runs(fake: FakeExec) -> None:
    fake.add_run("finished", "completed", pending_at=T0, running_at=T0 + 2, finished_at=T0 + 62)
    fake.add_run(
        "finished", "failed", TRACEBACK, pending_at=T0, running_at=T0 + 2, finished_at=T0 + 5
    )
    fake.add_run("running", pending_at=T0, running_at=T0 + 10)
    fake.add_run("pending", pending_at=T0 + 90)


def test_ls_prints_a_plain_table(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    add_sample_runs(env.fake)
    code, out, err = flwr(capsys, "ls", env.app_dir)
    assert (code, err) == (0, "")
    assert "\x1b" not in out
    header, *rows = out.splitlines()
    assert header.split() == [
        "Run", "ID", "App", "Owner", "Status", "Pending", "at", "Running", "at", "Finished",
        "at", "Elapsed", "Details",
    ]  # fmt: skip
    assert [row.split()[:8] for row in rows] == [
        ["1", "acme/demo@1.0.0", "-", "finished:completed", "2023-11-14T22:13:20Z",
         "2023-11-14T22:13:22Z", "2023-11-14T22:14:22Z", "0:01:00"],
        ["2", "acme/demo@1.0.0", "-", "finished:failed", "2023-11-14T22:13:20Z",
         "2023-11-14T22:13:22Z", "2023-11-14T22:13:25Z", "0:00:03"],
        ["3", "acme/demo@1.0.0", "-", "running", "2023-11-14T22:13:20Z",
         "2023-11-14T22:13:30Z", "-", "0:01:30"],
        ["4", "acme/demo@1.0.0", "-", "pending", "2023-11-14T22:14:50Z", "-", "-", "0:00:00"],
    ]  # fmt: skip
    assert rows[1].endswith("ValueError: boom")
    assert rows[0].endswith("-")


def test_ls_one_run(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    add_sample_runs(env.fake)
    code, out, _ = flwr(capsys, "ls", env.app_dir, "--run-id", "3")
    assert code == 0
    assert [row.split()[0] for row in out.splitlines()[1:]] == ["3"]


def test_ls_json_has_stable_keys(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    add_sample_runs(env.fake)
    code, out, _ = flwr(capsys, "ls", env.app_dir, "local", "--format", "json")
    assert code == 0
    runs = json.loads(out)
    assert [run["run_id"] for run in runs] == [1, 2, 3, 4]
    keys = {
        "app", "details", "elapsed_seconds", "fab_hash", "fab_id", "fab_version", "federation",
        "finished_at", "override_config", "owner", "pending_at", "run_config", "run_id",
        "running_at", "starting_at", "status", "sub_status",
    }  # fmt: skip
    assert all(set(run) == keys for run in runs)
    failed = runs[1]
    assert failed["app"] == "acme/demo@1.0.0"
    assert (failed["status"], failed["sub_status"], failed["details"]) == (
        "finished",
        "failed",
        TRACEBACK,
    )
    assert failed["pending_at"] == "2023-11-14T22:13:20.000000Z"
    assert failed["elapsed_seconds"] == 3.0
    assert runs[2]["finished_at"] is None
    assert runs[2]["elapsed_seconds"] == 90.0
    assert runs[0]["run_config"] == {"num-server-rounds": 3}
    assert env.fake.time_remaining["ListRuns"] is not None


# -- flwr log / stop -------------------------------------------------------------------------------


def test_log_prints_what_there_is(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    run_id = env.fake.add_run("running")
    code, out, err = flwr(capsys, "log", run_id, env.app_dir)
    assert (code, err) == (0, "")
    assert out == "run 1: starting\nrun 1: round 1 done\n"
    remaining = env.fake.time_remaining["StreamLogs"]
    assert remaining is not None and remaining <= 31


@pytest.mark.parametrize(
    ("outcome", "code"),
    [(("completed", ""), 0), (("failed", TRACEBACK), 1), (("stopped", "stopped by user"), 6)],
)
def test_log_follow_exits_with_the_outcome(
    env: Env, capsys: pytest.CaptureFixture[str], outcome: tuple[str, str], code: int
) -> None:
    env.fake.outcome = outcome
    run_id = env.fake.add_run("running")
    got, out, err = flwr(capsys, "log", run_id, env.app_dir, "local", "--follow")
    assert got == code
    lines = out.splitlines()
    assert lines[:4] == [
        "run 1: starting",
        "run 1: round 1 done",
        "run 1: round 2 done",
        f"run 1: {outcome[0]}",
    ]
    assert lines[4].startswith(f"Run 1 finished: {outcome[0]}")
    if code:
        assert_one_line(err, "flwr log: run 1 ")


def test_log_follow_catches_up_when_the_stream_ends_early(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.fake.end_stream_early = True
    run_id = env.fake.add_run("running")
    code, out, _ = flwr(capsys, "log", run_id, env.app_dir, "-f")
    assert code == 0
    assert out.splitlines() == [
        "run 1: starting",
        "run 1: round 1 done",
        "run 1: round 2 done",
        "run 1: completed",
        "Run 1 finished: completed",
    ]


def test_stop_a_running_run_then_again(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    run_id = env.fake.add_run("running")
    assert flwr(capsys, "stop", run_id, env.app_dir) == (0, "Stopped run 1\n", "")
    assert env.fake.runs[1].status.sub_status == "stopped"
    code, _, err = flwr(capsys, "stop", run_id, env.app_dir)
    assert code == 1
    assert_one_line(err, "flwr stop: run 1 was not stopped (it is finished:stopped)")
    assert env.fake.time_remaining["StopRun"] is not None


@pytest.mark.parametrize(
    "args",
    [
        ["log", "99", "APP"],
        ["log", "99", "APP", "--follow"],
        ["stop", "99", "APP"],
        ["ls", "APP", "--run-id", "99"],
    ],
)
def test_an_unknown_run_is_exit_3_with_one_line(
    env: Env, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, out, err = flwr(capsys, *(env.app_dir if arg == "APP" else arg for arg in args))
    assert code == 3
    assert out == ""
    assert err == f"flwr {args[0]}: run 99 not found\n"


def test_permission_denied_is_exit_5(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = flwr(capsys, "stop", "77", env.app_dir)
    assert code == 5
    assert err == "flwr stop: run 77 belongs to another user\n"


# -- nobody listening, Ctrl-C ----------------------------------------------------------------------


@pytest.mark.parametrize("args", [("ls",), ("run",), ("log", "1"), ("stop", "1")])
def test_a_superlink_that_is_not_running_is_exit_4_fast(
    env: Env, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    started = time.monotonic()
    code, out, err = flwr(capsys, *args, env.app_dir, "down")
    assert time.monotonic() - started < 3
    assert (code, out) == (4, "")
    address = f"127.0.0.1:{env.down_port}"
    assert err == f"flwr {args[0]}: cannot reach the SuperLink at {address} (is it running?)\n"


def _default_sigint() -> None:
    # A runner that started us in the background (no job control) passes SIGINT ignored,
    # and Python keeps an ignored SIGINT: give the CLI the disposition a terminal gives it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_flwr(*args: str | Path) -> subprocess.Popen[str]:
    if not FLWR.exists():
        pytest.skip("the flwr console script is not installed (pip install -e .)")
    return subprocess.Popen(
        [str(FLWR), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_default_sigint,
    )


@pytest.mark.timeout(20)
def test_the_console_script_reports_an_unreachable_superlink_in_one_line(env: Env) -> None:
    proc = run_flwr("run", env.app_dir, "down", "--stream")
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 4
    assert out == ""
    assert_one_line(err, "flwr run: cannot reach the SuperLink at 127.0.0.1:")


@pytest.mark.timeout(20)
def test_ctrl_c_while_following_exits_130_quietly(env: Env) -> None:
    env.fake.hold = True
    run_id = env.fake.add_run("running")
    proc = run_flwr("log", str(run_id), env.app_dir, "--follow")
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "run 1: starting\n"
        assert proc.stdout.readline() == "run 1: round 1 done\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert (out, err) == ("", "")
