"""A SuperNode killed with SIGKILL and started again on its node id file keeps its node id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corolla.superlink.config import SuperLinkConfig
from corolla.superlink.link import SuperLink


@pytest.fixture
def link() -> Iterator[SuperLink]:
    started = SuperLink(
        SuperLinkConfig(
            serverappio_address="127.0.0.1:0",
            fleet_address="127.0.0.1:0",
            exec_address="127.0.0.1:0",
            database=":memory:",
        )
    )
    started.start()
    yield started
    started.stop()


def start_node(link: SuperLink, node_id_file: Path, ready_file: Path) -> subprocess.Popen[str]:
    ready_file.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "corolla.supernode.main",
        "--insecure",
        "--superlink",
        link.addresses["fleet"],
        "--clientappio-api-address",
        "127.0.0.1:0",
        "--node-id-file",
        str(node_id_file),
        "--ready-file",
        str(ready_file),
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_ready(process: subprocess.Popen[str], ready_file: Path, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while not ready_file.exists():
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"the SuperNode exited with {process.returncode}:\n{output}")
        assert time.monotonic() < deadline, "the SuperNode never wrote its ready file"
        time.sleep(0.05)
    ready = json.loads(ready_file.read_text())
    assert ready["pid"] == process.pid
    return int(ready["node_id"])


def kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    if process.stdout:
        process.stdout.close()


def test_a_node_killed_with_sigkill_comes_back_with_the_same_id(
    link: SuperLink, tmp_path: Path
) -> None:
    id_file, ready_file = tmp_path / "node" / "id.json", tmp_path / "node" / "ready.json"
    first = start_node(link, id_file, ready_file)
    try:
        node_id = wait_ready(first, ready_file)
        assert link.state.online_node_ids() == [node_id]
        assert json.loads(id_file.read_text())["node_id"] == node_id
    finally:
        kill(first)
    second = start_node(link, id_file, ready_file)
    try:
        assert wait_ready(second, ready_file) == node_id
        assert link.state.online_node_ids() == [node_id]
        assert json.loads(id_file.read_text())["node_id"] == node_id
    finally:
        kill(second)
