"""ServerAppLauncher: runs start, dead or hung app processes fail the run with a reason."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest

from corolla.superlink.launcher import ServerAppLauncher
from corolla.superlink.state import LinkState, RunRecord, RunStatus, SqliteLinkState, SubStatus

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def state() -> Iterator[LinkState]:
    db = SqliteLinkState(":memory:")
    yield db
    db.close()


def new_run(state: LinkState) -> int:
    state.store_fab("f" * 64, b"fab")
    return state.create_run(
        fab_id="p/app", fab_version="1", fab_hash="f" * 64, override_config={}, run_config={}
    )


def wait_finished(state: LinkState, run_id: int, timeout: float = 20) -> RunRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = state.get_run(run_id)
        if run.status == RunStatus.FINISHED:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} still {state.get_run(run_id).status}")


def launcher(state: LinkState, script: str, **kwargs: float) -> ServerAppLauncher:
    return ServerAppLauncher(
        state, "127.0.0.1:1", poll=0.05, command=[sys.executable, "-c", script], **kwargs
    )


def test_process_that_dies_fails_the_run_with_its_last_output(state: LinkState) -> None:
    run_id = new_run(state)
    runner = launcher(state, "import sys; print('boom: cannot start'); sys.exit(3)")
    runner.start()
    try:
        run = wait_finished(state, run_id)
    finally:
        runner.stop()
    assert run.sub_status == SubStatus.FAILED
    assert "exited with code 3" in run.details
    assert "boom: cannot start" in run.details
    assert any("run failed" in line for line in state.get_logs(run_id)[0])


def test_process_that_never_starts_the_run_times_out(state: LinkState) -> None:
    run_id = new_run(state)
    runner = launcher(state, "import time; time.sleep(60)", start_timeout=0.5)
    runner.start()
    try:
        run = wait_finished(state, run_id)
    finally:
        runner.stop()
    assert run.sub_status == SubStatus.FAILED
    assert "did not start the run within" in run.details


def test_stopped_run_terminates_its_process(state: LinkState) -> None:
    run_id = new_run(state)
    runner = launcher(state, "import time; time.sleep(60)")
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while run_id not in runner._procs:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process = runner._procs[run_id].process
        state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.STOPPED, "stopped by user")
        runner.notify()
        process.wait(timeout=15)
    finally:
        runner.stop()
    assert process.returncode is not None
    assert state.get_run(run_id).sub_status == SubStatus.STOPPED
