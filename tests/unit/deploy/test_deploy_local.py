"""`LocalFederation` learns readiness and ports from ready files, not from log lines."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from corolla.common.errors import DeadlineExceeded, Unavailable
from corolla.deploy import local
from corolla.deploy.local import Daemon, LocalFederation, terminate

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[Daemon]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    daemon = Daemon("sleeper", process, tmp_path / "sleeper.log", tmp_path / "s.ready.json")
    yield daemon
    terminate(process)


def test_a_stale_ready_file_of_another_process_is_not_ready(sleeper: Daemon) -> None:
    assert sleeper.ready_path is not None
    assert sleeper.ready() is None
    sleeper.ready_path.write_text(json.dumps({"pid": sleeper.process.pid + 1, "node_id": 1}))
    assert sleeper.ready() is None
    sleeper.ready_path.write_text(json.dumps({"pid": sleeper.process.pid, "node_id": 1}))
    assert local._wait_ready(sleeper) == {"pid": sleeper.process.pid, "node_id": 1}


def test_a_log_line_is_not_readiness(sleeper: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the ready file counts: the words a daemon logs are not read."""
    monkeypatch.setattr(local, "READY_TIMEOUT", 0.3)
    sleeper.log_path.write_text("INFO registered as node 5 with the SuperLink at x\n")
    with pytest.raises(DeadlineExceeded):
        local._wait_ready(sleeper)


def test_a_daemon_that_exits_before_ready_is_reported(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", "print('boom')"], stdout=subprocess.DEVNULL)
    process.wait(timeout=30)
    daemon = Daemon("quitter", process, tmp_path / "q.log", tmp_path / "q.ready.json")
    with pytest.raises(Unavailable, match="quitter exited early"):
        local._wait_ready(daemon)


def test_superlink_ports_come_from_its_ready_file(tmp_path: Path) -> None:
    fed = LocalFederation(tmp_path / "fed", num_nodes=0)
    try:
        fed.start()
        assert fed.superlink is not None and fed.superlink.ready_path is not None
        ready = json.loads(fed.superlink.ready_path.read_text())
        assert ready["pid"] == fed.superlink.process.pid
        assert (fed.serverappio, fed.fleet, fed.exec) == (
            ready["serverappio"],
            ready["fleet"],
            ready["exec"],
        )
        assert all(not a.endswith(":0") for a in (fed.serverappio, fed.fleet, fed.exec))
    finally:
        fed.stop()
    assert fed.superlink is not None and fed.superlink.process.poll() is not None


def test_a_restarted_supernode_keeps_its_id(tmp_path: Path) -> None:
    fed = LocalFederation(tmp_path / "fed", num_nodes=1)
    try:
        fed.start()
        first = fed.node_id(0)
        address = fed.clientappio_address(0)
        assert address.startswith("127.0.0.1:") and not address.endswith(":0")
        assert (tmp_path / "fed" / "supernode-0.node-id").exists()
        terminate(fed.supernodes[0].process)
        fed.supernodes[0] = fed.start_supernode(0)
        assert fed.node_id(0) == first
    finally:
        fed.stop()


def test_a_start_that_fails_midway_stops_what_it_started(tmp_path: Path) -> None:
    """The second SuperNode refuses its flags: the SuperLink and the first node are stopped."""
    federation = LocalFederation(tmp_path / "fed", num_nodes=2)
    real = federation.start_supernode

    def start_supernode(index: int, wait: bool = True) -> Daemon:
        if index == 1:
            federation.supernode_args = ["--no-such-flag"]
        return real(index, wait)

    federation.start_supernode = start_supernode  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        federation.start()
    assert federation.superlink is not None and len(federation.supernodes) == 2
    for daemon in (federation.superlink, *federation.supernodes):
        assert daemon.process.poll() is not None  # stopped and reaped
