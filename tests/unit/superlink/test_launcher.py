"""ServerAppLauncher, driven tick by tick on a fake clock: queueing, races, crashes, resumes."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corolla.superlink.heartbeats import AppHeartbeats
from corolla.superlink.launcher import ServerAppLauncher
from corolla.superlink.runs import Runs
from corolla.superlink.state import LinkState, RunRecord, RunStatus, SubStatus

pytestmark = pytest.mark.timeout(60)

SLEEP = "import time; time.sleep(60)"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def new_run(state: LinkState) -> int:
    state.store_fab("f" * 64, b"fab")
    return state.create_run(
        fab_id="p/app", fab_version="1", fab_hash="f" * 64, override_config={}, run_config={}
    )


class Harness:
    def __init__(self, state: LinkState, tmp: Path, script: str, **kwargs: Any) -> None:
        self.clock = Clock()
        self.runs = Runs(state)
        self.heartbeats = AppHeartbeats(self.clock)
        self.launcher = ServerAppLauncher(
            self.runs,
            "127.0.0.1:1",
            self.heartbeats,
            tmp,
            command=[sys.executable, "-c", script],
            clock=self.clock,
            **kwargs,
        )
        tmp.mkdir(parents=True, exist_ok=True)

    def procs(self) -> dict[int, Any]:
        return self.launcher._procs

    def tick_until_exited(self, run_id: int, timeout: float = 20) -> None:
        """Tick until the launcher has reaped the run's process."""
        deadline = time.monotonic() + timeout
        while run_id in self.procs():
            assert time.monotonic() < deadline, "process did not exit"
            time.sleep(0.02)
            self.launcher.tick()


@pytest.fixture
def harness(state: LinkState, tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def make(script: str = SLEEP, **kwargs: Any) -> Harness:
        made.append(Harness(state, tmp_path / f"out{len(made)}", script, **kwargs))
        return made[-1]

    yield make
    for h in made:
        h.launcher.stop()


def run(state: LinkState, run_id: int) -> RunRecord:
    return state.get_run(run_id)


def test_process_that_dies_fails_the_run_with_how_it_ended(state: LinkState, harness: Any) -> None:
    h = harness("import sys; print('boom: cannot start'); sys.exit(3)")
    run_id = new_run(state)
    h.launcher.tick()
    assert run(state, run_id).status == RunStatus.STARTING
    h.tick_until_exited(run_id)
    details = run(state, run_id).details
    assert run(state, run_id).sub_status == SubStatus.FAILED
    assert details.startswith("ServerApp process exited with code 3 before finishing the run")
    assert "boom: cannot start" in details  # the last output, as context
    assert any("run failed" in line for line in state.get_logs(run_id)[0])


def test_a_killed_process_is_reported_by_its_signal(state: LinkState, harness: Any) -> None:
    h = harness()
    run_id = new_run(state)
    h.launcher.tick()
    h.procs()[run_id].process.send_signal(signal.SIGKILL)
    h.tick_until_exited(run_id)
    assert "was killed by signal SIGKILL" in run(state, run_id).details


def test_start_timeout_follows_the_clock(state: LinkState, harness: Any) -> None:
    h = harness(start_timeout=30)
    run_id = new_run(state)
    h.launcher.tick()
    h.clock.now += 29
    h.launcher.tick()
    assert run(state, run_id).status == RunStatus.STARTING
    h.clock.now += 2
    h.launcher.tick()
    assert run(state, run_id).sub_status == SubStatus.FAILED
    assert "did not start the run within 30 s" in run(state, run_id).details
    assert run_id not in h.procs()


def test_stopped_run_terminates_its_process(state: LinkState, harness: Any) -> None:
    h = harness()
    run_id = new_run(state)
    h.launcher.tick()
    process = h.procs()[run_id].process
    assert h.runs.stop(run_id)
    h.launcher.tick()
    assert process.poll() is not None  # terminated and reaped
    assert run(state, run_id).sub_status == SubStatus.STOPPED


def test_a_stop_racing_the_start_is_not_a_crash(state: LinkState, harness: Any) -> None:
    """The stop lands between the launcher picking the run and starting it."""
    h = harness()
    run_id = new_run(state)
    real_start = h.runs.start

    def stop_first(rid: int) -> bool:
        h.runs.stop(rid)
        return real_start(rid)

    h.runs.start = stop_first  # type: ignore[method-assign]  # inject the race
    h.launcher.tick()
    assert run_id not in h.procs()  # nothing started for a stopped run
    assert run(state, run_id).sub_status == SubStatus.STOPPED
    h.runs.start = real_start  # type: ignore[method-assign]
    other = new_run(state)
    h.launcher.tick()  # the launcher goes on serving
    assert other in h.procs()
    assert h.launcher.error is None


def test_an_error_for_one_run_does_not_stop_the_others(
    state: LinkState, harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness(max_concurrent=4)
    bad, good = new_run(state), new_run(state)
    real = state.create_token

    def create_token(run_id: int) -> str:
        if run_id == bad:
            raise RuntimeError("disk on fire")
        return real(run_id)

    monkeypatch.setattr(state, "create_token", create_token)
    h.launcher.tick()
    assert good in h.procs() and bad not in h.procs()


def test_runs_queue_at_the_limit_and_start_in_order(state: LinkState, harness: Any) -> None:
    h = harness(max_concurrent=2)
    ids = [new_run(state) for _ in range(4)]
    h.launcher.tick()
    assert sorted(h.procs()) == sorted(ids[:2])
    assert [run(state, r).details for r in ids[2:]] == ["queued (next)", "queued (1 ahead)"]
    assert h.runs.stop(ids[0])
    h.launcher.tick()  # the stopped run's slot goes to the next in line
    assert sorted(h.procs()) == sorted([ids[1], ids[2]])
    assert run(state, ids[3]).details == "queued (next)"


def test_a_crashed_run_with_a_checkpoint_resumes(state: LinkState, harness: Any) -> None:
    h = harness()
    run_id = new_run(state)
    h.launcher.tick()
    h.runs.mark_running(run_id)
    state.set_checkpoint(run_id, 2, b"ckpt", [])
    h.procs()[run_id].process.send_signal(signal.SIGKILL)
    h.tick_until_exited(run_id)
    assert run(state, run_id).status == RunStatus.PENDING
    assert "resumes from round 2" in run(state, run_id).details
    h.launcher.tick()
    assert run(state, run_id).status == RunStatus.STARTING
    assert run(state, run_id).details == "resumed from round 2"
    assert run_id in h.procs()


def test_an_adopted_run_fails_when_its_process_stays_silent(state: LinkState, harness: Any) -> None:
    """After a SuperLink restart a running run has no child here: heartbeats keep it alive."""
    h = harness(heartbeat_timeout=15)
    run_id = new_run(state)
    state.update_run_status(run_id, RunStatus.STARTING)
    state.update_run_status(run_id, RunStatus.RUNNING)
    h.launcher.tick()  # grace starts
    h.clock.now += 10
    h.heartbeats.beat(run_id)  # its ServerApp process reconnected
    h.clock.now += 14
    h.launcher.tick()
    assert run(state, run_id).status == RunStatus.RUNNING
    h.clock.now += 2
    h.launcher.tick()
    assert run(state, run_id).sub_status == SubStatus.FAILED
    assert "no heartbeat for 16 s" in run(state, run_id).details


def test_shutdown_requeues_runs_in_progress(state: LinkState, harness: Any) -> None:
    h = harness()
    run_id = new_run(state)
    h.launcher.tick()
    process = h.procs()[run_id].process
    h.launcher.stop()
    assert process.poll() is not None
    assert run(state, run_id).status == RunStatus.PENDING
    assert "the SuperLink shut down" in run(state, run_id).details
