"""`flower-supernode` as a process against a real SuperLink: serves a run, rejoins a restarted
SuperLink, signs off on SIGTERM, and a killed one is reported offline."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from real_superlink import Link
from supernode_fakes import APPIO_SECRET, AppProcesses, pid_gone, wait_for

from corolla.records import ErrorCode

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
    link: Link,
    app_fab: tuple[bytes, str],
    daemons: list[subprocess.Popen[bytes]],
    app_processes: AppProcesses,
    tmp_path: Path,
) -> None:
    """The app process shares nothing with its SuperNode but the address and the secret: its
    own working directory, COROLLA_HOME and a minimal environment."""
    run_id = link.add_run(app_fab)
    secret_file = tmp_path / "appio-secret"
    secret_file.write_text(APPIO_SECRET + "\n")
    node_home, node_dir = tmp_path / "node-home", tmp_path / "node-dir"
    app_home, app_dir = tmp_path / "app-home", tmp_path / "app-dir"
    node_dir.mkdir()
    app_dir.mkdir()
    node_log = tmp_path / "supernode.log"
    with node_log.open("wb") as log_file:
        command = supernode_command(
            link.address,
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
    node_id = link.wait_node()
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
    reply = link.reply_to(link.send(run_id, node_id))
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
    link: Link,
    app_fab: tuple[bytes, str],
    daemons: list[subprocess.Popen[bytes]],
    corolla_home: Path,
) -> None:
    run_id = link.add_run(app_fab)
    command = supernode_command(
        link.address,
        "--insecure",
        "--node-config",
        "partition-id=3 dataset='cifar'",
        "--heartbeat-interval",
        "30",  # online for a minute by heartbeat: only signing off takes it offline
    )
    daemon = subprocess.Popen(command, stderr=subprocess.PIPE, env=dict(os.environ))
    daemons.append(daemon)
    node_id = link.wait_node()

    first = link.reply_to(link.send(run_id, node_id))
    second = link.reply_to(link.send(run_id, node_id))
    assert dict(first.content["node"]) == {"partition-id": 3, "dataset": "cifar"}
    pid = first.content["out"]["pid"]
    assert second.content["out"]["pid"] == pid and second.content["out"]["count"] == 2
    assert any(corolla_home.joinpath("apps").iterdir())  # the FAB went to COROLLA_HOME

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(20) == 0
    stderr = daemon.stderr.read().decode() if daemon.stderr else ""
    assert "not encrypted" in stderr  # the --insecure warning
    assert pid_gone(pid), "the ClientApp process outlived its SuperNode"
    assert node_id not in link.online()  # it signed off


def test_a_killed_daemon_is_marked_offline_and_its_message_answered_by_the_superlink(
    link: Link, app_fab: tuple[bytes, str], daemons: list[subprocess.Popen[bytes]]
) -> None:
    """kill -9: the node cannot answer or sign off; once its heartbeat runs out (by the
    SuperLink's clock) its instruction is answered NODE_UNAVAILABLE and its ClientApp exits."""
    run_id = link.add_run(app_fab)
    daemon = subprocess.Popen(
        supernode_command(link.address, "--insecure", "--heartbeat-interval", "30"),
        stderr=subprocess.DEVNULL,
    )
    daemons.append(daemon)
    node_id = link.wait_node()
    pid = link.reply_to(link.send(run_id, node_id)).content["out"]["pid"]
    hanging = link.send(run_id, node_id, action="hang")
    assert wait_for(lambda: any("hanging now" in line for line in link.log_lines()), 15)
    daemon.kill()  # no chance to stop its children
    daemon.wait(10)
    assert node_id in link.online()  # its last heartbeat still holds
    link.advance(3600)
    assert node_id not in link.online()
    reply = link.reply_to(hanging)
    assert reply.error.code == ErrorCode.NODE_UNAVAILABLE
    assert reply.error.reason == f"node {node_id} went offline before replying"
    assert wait_for(lambda: pid_gone(pid), 10), "an orphaned ClientApp process kept running"


def test_daemon_rejoins_a_restarted_superlink(
    link: Link, app_fab: tuple[bytes, str], daemons: list[subprocess.Popen[bytes]]
) -> None:
    run_id = link.add_run(app_fab)
    daemon = subprocess.Popen(
        supernode_command(link.address, "--insecure"), stderr=subprocess.DEVNULL
    )
    daemons.append(daemon)
    node_id = link.wait_node()
    assert not link.reply_to(link.send(run_id, node_id)).has_error()

    # The SuperLink goes away, then comes back on the same address without its node table.
    host_port = link.address
    link.stop()
    restarted = None
    try:
        assert daemon.poll() is None
        restarted = Link(host_port)
        # Its clock stands still: the node's loops may still be backing off from the outage, and
        # whether a 0.3 s heartbeat lands in time must not decide this test (rejoining does).
        now = restarted.state.clock()
        restarted.state.clock = lambda: now  # type: ignore[method-assign]
        assert wait_for(lambda: node_id in restarted.online(), 25), "the node did not rejoin"
        assert restarted.online() == [node_id]  # it asked for its old id
        new_run = restarted.add_run(app_fab)
        reply = restarted.reply_to(restarted.send(new_run, node_id))
        assert not reply.has_error()
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
        if restarted is not None:
            restarted.stop()
