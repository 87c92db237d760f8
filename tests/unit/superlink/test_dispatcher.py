"""ProcessDispatcher (isolation process) on a fake clock: attach and heartbeat timeouts, the
queue limit, resume after a lost app process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from corolla.superlink.dispatcher import WAITING, ProcessDispatcher
from corolla.superlink.heartbeats import AppHeartbeats
from corolla.superlink.runs import Runs
from corolla.superlink.state import LinkState, RunStatus, SqliteLinkState, SubStatus


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> Iterator[LinkState]:
    db = SqliteLinkState(":memory:", clock=clock)
    yield db
    db.close()


def new_run(state: LinkState) -> int:
    state.store_fab("f" * 64, b"fab")
    return state.create_run(
        fab_id="p/app", fab_version="1", fab_hash="f" * 64, override_config={}, run_config={}
    )


def dispatcher(state: LinkState, clock: Clock, limit: int = 2) -> ProcessDispatcher:
    return ProcessDispatcher(
        Runs(state),
        AppHeartbeats(clock),
        attach_timeout=30,
        heartbeat_timeout=10,
        max_concurrent=limit,
    )


def test_a_run_nobody_attaches_to_waits_visibly_then_fails(state: LinkState, clock: Clock) -> None:
    d = dispatcher(state, clock)
    run_id = new_run(state)
    d.check()
    assert state.get_run(run_id).details == WAITING
    clock.now += 29
    d.check()
    assert state.get_run(run_id).status == RunStatus.PENDING
    clock.now += 2
    d.check()
    run = state.get_run(run_id)
    assert (run.status, run.sub_status) == (RunStatus.FINISHED, SubStatus.FAILED)
    assert "no flwr-serverapp process attached within 30 s" in run.details


def test_claims_respect_the_limit_and_queued_runs_do_not_time_out(
    state: LinkState, clock: Clock
) -> None:
    d = dispatcher(state, clock, limit=1)
    first, second = new_run(state), new_run(state)
    claimed = d.claim(0)
    assert claimed is not None and claimed[0] == first
    assert d.claim(0) is None  # the limit: one at a time
    clock.now += 5
    d.check()
    assert state.get_run(second).details == "queued (next)"
    clock.now += 60  # far past the attach timeout, but it was never its turn
    d.check()
    assert state.get_run(second).status == RunStatus.PENDING


def test_a_silent_app_process_fails_its_run_or_resumes_it(state: LinkState, clock: Clock) -> None:
    d = dispatcher(state, clock)
    plain, saved = new_run(state), new_run(state)
    assert d.claim(0) is not None and d.claim(0) is not None
    for run_id in (plain, saved):
        Runs(state).mark_running(run_id)
    state.set_checkpoint(saved, 3, b"ckpt", [])
    clock.now += 11
    d.check()
    assert state.get_run(plain).sub_status == SubStatus.FAILED
    assert "stopped responding (no heartbeat for 11 s)" in state.get_run(plain).details
    assert state.get_run(saved).status == RunStatus.PENDING  # another process may pick it up
    assert "resumes from round 3" in state.get_run(saved).details
    claimed = d.claim(0)
    assert claimed is not None and claimed[0] == saved
    assert state.get_run(saved).details == "resumed from round 3"
