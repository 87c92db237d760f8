"""``--idle-timeout``: a SuperLink with no unfinished run and no Exec call for the timeout exits
cleanly. The logic runs on an injected clock (no sleeping); one real process shows the exit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from corolla.common.config import UsageError
from corolla.common.grpc import create_channel
from corolla.proto.v1 import exec_pb2, exec_pb2_grpc
from corolla.superlink.config import SuperLinkConfig, parse_config
from corolla.superlink.idle import IdleWatch
from corolla.superlink.link import SuperLink
from corolla.superlink.state import RunStatus, SubStatus

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_idle_watch_expires_after_the_timeout_and_activity_restarts_it() -> None:
    clock, busy = Clock(), [False]
    watch = IdleWatch(60.0, lambda: busy[0], clock)
    clock.now += 59.9
    assert not watch.expired()
    clock.now += 0.1
    assert watch.expired()
    watch.touch()  # an Exec call
    assert watch.idle_for() == 0.0 and not watch.expired()
    clock.now += 30
    busy[0] = True  # a run is pending: never idle, however long it lasts
    clock.now += 1000
    assert not watch.expired()
    busy[0] = False  # it finished: the timeout counts from the last time it was seen
    clock.now += 59
    assert not watch.expired()
    clock.now += 1
    assert watch.expired()


def test_the_flag_is_off_by_default_and_must_be_positive() -> None:
    assert parse_config(["--insecure"], environ={}).idle_timeout is None
    assert parse_config(["--insecure", "--idle-timeout", "900"], environ={}).idle_timeout == 900.0
    env = {"COROLLA_IDLE_TIMEOUT": "30"}
    assert parse_config(["--insecure"], environ=env).idle_timeout == 30.0
    assert parse_config(["--insecure", "--idle-timeout", "5"], environ=env).idle_timeout == 5.0
    with pytest.raises(UsageError, match="--idle-timeout: must be a finite number"):
        parse_config(["--insecure", "--idle-timeout", "0"], environ={})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def link(clock: Clock) -> Iterator[SuperLink]:
    config = SuperLinkConfig(
        serverappio_address="127.0.0.1:0",
        fleet_address="127.0.0.1:0",
        exec_address="127.0.0.1:0",
        # isolation process: a pending run stays pending (nobody attaches), so the test is not
        # raced by a launcher failing it
        isolation="process",
        appio_secret="s" * 32,
        app_attach_timeout=3600.0,
        idle_timeout=60.0,
    )
    link = SuperLink(config, clock=clock)
    link.start()
    yield link
    link.stop()


def test_a_superlink_counts_exec_calls_and_unfinished_runs_as_activity(
    link: SuperLink, clock: Clock
) -> None:
    clock.now += 61
    assert link.idle_expired()
    with create_channel(link.addresses["exec"], insecure=True) as channel:
        exec_pb2_grpc.ExecStub(channel).ListRuns(exec_pb2.ListRunsRequest(), timeout=10)
    assert not link.idle_expired()  # the Exec call restarted the idle time
    run_id = link.state.create_run(
        fab_id="p/a", fab_version="1", fab_hash="f" * 64, override_config={}, run_config={}
    )
    clock.now += 3600  # pending for an hour: busy, not idle
    assert not link.idle_expired()
    link.state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.STOPPED)
    clock.now += 59
    assert not link.idle_expired()
    clock.now += 1
    assert link.idle_expired()


def test_without_the_flag_a_superlink_is_never_idle(clock: Clock) -> None:
    link = SuperLink(SuperLinkConfig(), clock=clock)
    clock.now += 10**9
    assert not link.idle_expired()
    link.state.close()


def test_a_real_superlink_exits_0_when_idle_and_removes_its_ready_file(tmp_path: Path) -> None:
    ready = tmp_path / "link.ready.json"
    args = ["--insecure", "--database", ":memory:", "--ready-file", str(ready)]
    for api in ("serverappio", "fleet", "exec"):
        args += [f"--{api}-api-address", "127.0.0.1:0"]
    result = subprocess.run(
        [sys.executable, "-m", "corolla.superlink.main", *args, "--idle-timeout", "0.2"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COROLLA_HOME": str(tmp_path / "home")},
    )
    assert result.returncode == 0, result.stderr
    assert "(--idle-timeout), shutting down" in result.stderr
    assert "SuperLink stopped" in result.stderr
    assert not ready.exists()
