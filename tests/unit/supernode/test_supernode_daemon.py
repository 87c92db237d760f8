"""`flower-supernode` as a process: serves a run, rejoins a restarted SuperLink, stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from supernode_fakes import (
    APPIO_SECRET,
    AppProcesses,
    FakeFleet,
    pid_gone,
    serve_fleet,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)


def supernode_command(superlink: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "corolla.supernode.main",
        "--superlink",
        superlink,
        "--clientappio-api-address",
        "127.0.0.1:0",
        "--heartbeat-interval",
        "0.3",
        "--max-wait",
        "1",
        *extra,
    ]


@pytest.fixture
def daemons() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_missing_insecure_exits_2_with_one_line() -> None:
    result = subprocess.run(
        supernode_command("127.0.0.1:1"), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "--insecure" in result.stderr and "TLS" in result.stderr


def test_process_isolation_without_a_secret_file_exits_2_with_one_line() -> None:
    result = subprocess.run(
        supernode_command("127.0.0.1:1", "--insecure", "--isolation", "process"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "--isolation process requires --appio-secret-file PATH" in result.stderr


def test_app_process_in_its_own_environment_serves_a_process_isolation_daemon(
    fleet: FakeFleet,
    app_fab: tuple[bytes, str],
    daemons: list[subprocess.Popen[bytes]],
    app_processes: AppProcesses,
    tmp_path: Path,
) -> None:
    """The app process shares nothing with its SuperNode but the address and the secret: its
    own working directory, COROLLA_HOME and a minimal environment."""
    fleet.add_run(24, *app_fab)
    secret_file = tmp_path / "appio-secret"
    secret_file.write_text(APPIO_SECRET + "\n")
    node_home, node_dir = tmp_path / "node-home", tmp_path / "node-dir"
    app_home, app_dir = tmp_path / "app-home", tmp_path / "app-dir"
    node_dir.mkdir()
    app_dir.mkdir()
    node_log = tmp_path / "supernode.log"
    with node_log.open("wb") as log_file:
        command = supernode_command(
            fleet.address,
            "--insecure",
            "--isolation",
            "process",
            "--appio-secret-file",
            str(secret_file),
            "--app-heartbeat-timeout",
            "2",
        )
        env = {**os.environ, "COROLLA_HOME": str(node_home)}
        daemon = subprocess.Popen(command, stderr=log_file, env=env, cwd=node_dir)
    daemons.append(daemon)
    node_id = fleet.wait_node()
    pattern = re.compile(r"ClientAppIo API listening on (\S+)")
    assert wait_for(lambda: pattern.search(node_log.read_text()) is not None, 10)
    match = pattern.search(node_log.read_text())
    assert match is not None
    address = match.group(1)

    app_env = {
        "PATH": "/usr/bin:/bin",
        "COROLLA_HOME": str(app_home),
        "COROLLA_APPIO_SECRET": APPIO_SECRET,
    }
    app = app_processes.start(address, "--insecure", env=app_env, cwd=app_dir)
    reply = fleet.reply_to(fleet.send(24, node_id))
    assert not reply.has_error(), reply.error
    assert dict(reply.content["env"])["home"] == str(app_home)
    assert dict(reply.content["env"])["cwd"] == str(app_dir)
    assert any((app_home / "apps").iterdir())  # the app process installed the FAB itself
    assert not (node_home / "apps").exists()  # the SuperNode only relayed it

    app.send_signal(signal.SIGTERM)
    assert app.wait(10) == 0, app_processes.output(app)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(20) == 0
    assert APPIO_SECRET not in node_log.read_text()


def test_daemon_serves_messages_and_sigterm_stops_it_and_its_children(
    fleet: FakeFleet,
    app_fab: tuple[bytes, str],
    daemons: list[subprocess.Popen[bytes]],
    corolla_home: Path,
) -> None:
    fleet.add_run(21, *app_fab)
    command = supernode_command(
        fleet.address, "--insecure", "--node-config", "partition-id=3 dataset='cifar'"
    )
    daemon = subprocess.Popen(command, stderr=subprocess.PIPE, env=dict(os.environ))
    daemons.append(daemon)
    node_id = fleet.wait_node()

    first = fleet.reply_to(fleet.send(21, node_id))
    second = fleet.reply_to(fleet.send(21, node_id))
    assert dict(first.content["node"]) == {"partition-id": 3, "dataset": "cifar"}
    pid = first.content["out"]["pid"]
    assert second.content["out"]["pid"] == pid and second.content["out"]["count"] == 2
    assert any(corolla_home.joinpath("apps").iterdir())  # the FAB went to COROLLA_HOME

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(20) == 0
    stderr = daemon.stderr.read().decode() if daemon.stderr else ""
    assert "not encrypted" in stderr  # the --insecure warning
    assert pid_gone(pid), "the ClientApp process outlived its SuperNode"
    assert fleet.deleted == [node_id]


def test_clientapp_exits_when_its_supernode_dies(
    fleet: FakeFleet, app_fab: tuple[bytes, str], daemons: list[subprocess.Popen[bytes]]
) -> None:
    fleet.add_run(23, *app_fab)
    daemon = subprocess.Popen(
        supernode_command(fleet.address, "--insecure"), stderr=subprocess.DEVNULL
    )
    daemons.append(daemon)
    node_id = fleet.wait_node()
    pid = fleet.reply_to(fleet.send(23, node_id)).content["out"]["pid"]
    daemon.kill()  # no chance to stop its children
    daemon.wait(10)
    assert wait_for(lambda: pid_gone(pid), 10), "an orphaned ClientApp process kept running"


def test_daemon_rejoins_a_restarted_superlink(
    fleet: FakeFleet, app_fab: tuple[bytes, str], daemons: list[subprocess.Popen[bytes]]
) -> None:
    fleet.add_run(22, *app_fab)
    daemon = subprocess.Popen(
        supernode_command(fleet.address, "--insecure"), stderr=subprocess.DEVNULL
    )
    daemons.append(daemon)
    node_id = fleet.wait_node()
    assert not fleet.reply_to(fleet.send(22, node_id)).has_error()

    # The SuperLink goes away, then comes back on the same address without its node table.
    host_port = fleet.address
    restarted = FakeFleet()
    restarted.add_run(22, *app_fab)
    server = None
    try:
        assert fleet.server is not None
        fleet.server.stop(0).wait(5)
        time.sleep(1.0)  # the node sees UNAVAILABLE and backs off
        assert daemon.poll() is None
        server = serve_fleet(restarted, host_port)
        assert wait_for(lambda: node_id in restarted.nodes, 25), "the node did not rejoin"
        assert restarted.create_requests[-1].requested_node_id == node_id
        reply = restarted.reply_to(restarted.send(22, node_id))
        assert not reply.has_error()
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
        if server is not None:
            server.stop(0).wait(5)
