"""`Runs`, the one owner of the run lifecycle: races answer False, resumes are bounded, and
what ``flwr ls`` shows keeps the reason a run is waiting."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from corolla.common.errors import InvalidArgument, NotFound
from corolla.fab import build_fab_bytes
from corolla.records.context import UserConfig
from corolla.superlink.runs import MAX_RESUMES, Runs, merge_run_config
from corolla.superlink.state import LinkState, RunStatus, SqliteLinkState, SubStatus

BAD_NUM = re.escape("'options.num-supernodes' must be an integer")


@pytest.fixture
def runs() -> Iterator[Runs]:
    state = SqliteLinkState(":memory:")
    yield Runs(state)
    state.close()


def new_run(state: LinkState) -> int:
    state.store_fab("f" * 64, b"fab")
    return state.create_run(
        fab_id="p/app", fab_version="1", fab_hash="f" * 64, override_config={}, run_config={}
    )


def running(runs: Runs) -> int:
    run_id = new_run(runs.state)
    assert runs.start(run_id)
    runs.mark_running(run_id)
    return run_id


def test_racing_changes_answer_false_not_raise(runs: Runs) -> None:
    run_id = running(runs)
    assert runs.stop(run_id)
    assert not runs.stop(run_id)  # a second stop
    assert not runs.finish(run_id, SubStatus.COMPLETED, "")  # a finish after the stop
    assert not runs.fail(run_id, "too late")
    assert not runs.requeue(run_id, "too late")
    assert not runs.start(run_id)
    assert runs.state.get_run(run_id).sub_status == SubStatus.STOPPED
    with pytest.raises(NotFound):
        runs.stop(run_id + 1)


def test_a_lost_app_resumes_a_bounded_number_of_times(runs: Runs) -> None:
    run_id = running(runs)
    runs.state.set_checkpoint(run_id, 1, b"ckpt", [])
    for _ in range(MAX_RESUMES):
        runs.lost_app(run_id, "ServerApp process was killed by signal SIGKILL")
        assert runs.state.get_run(run_id).status == RunStatus.PENDING
        assert runs.start(run_id)
        runs.mark_running(run_id)
    runs.lost_app(run_id, "ServerApp process was killed by signal SIGKILL")
    run = runs.state.get_run(run_id)
    assert run.sub_status == SubStatus.FAILED
    assert f"gave up after {MAX_RESUMES} resumes" in run.details


def test_a_lost_app_without_checkpoint_fails_with_the_reason(runs: Runs) -> None:
    run_id = running(runs)
    runs.lost_app(run_id, "ServerApp process exited with code 3\nlast line")
    run = runs.state.get_run(run_id)
    assert (run.sub_status, run.details) == (
        SubStatus.FAILED,
        "ServerApp process exited with code 3\nlast line",
    )
    assert (
        "ERROR run failed: ServerApp process exited with code 3"
        in runs.state.get_logs(run_id)[0][0]
    )


def test_a_queue_note_keeps_the_requeue_reason(runs: Runs) -> None:
    run_id = running(runs)
    runs.requeue(run_id, "the SuperLink shut down")
    reason = "the SuperLink shut down; the run starts over"
    assert runs.state.get_run(run_id).details == reason
    runs.note(runs.state.get_run(run_id), "queued (next)")
    assert runs.state.get_run(run_id).details == f"{reason} | queued (next)"
    runs.note(runs.state.get_run(run_id), "queued (1 ahead)")
    assert runs.state.get_run(run_id).details == f"{reason} | queued (1 ahead)"
    plain = new_run(runs.state)
    runs.note(runs.state.get_run(plain), "queued (next)")
    assert runs.state.get_run(plain).details == "queued (next)"


def test_a_completed_resumed_run_still_says_it_resumed(runs: Runs) -> None:
    run_id = running(runs)
    runs.state.set_checkpoint(run_id, 2, b"ckpt", [])
    runs.lost_app(run_id, "ServerApp process was killed by signal SIGKILL")
    assert runs.start(run_id)
    assert runs.mark_running(run_id).details == "resumed from round 2"
    assert runs.finish(run_id, SubStatus.COMPLETED, "")
    assert runs.state.get_run(run_id).details == "resumed from round 2"


def test_run_config_overrides_must_be_known() -> None:
    assert merge_run_config({"lr": 0.1, "epochs": 1}, {"lr": 0.5}) == {"lr": 0.5, "epochs": 1}
    with pytest.raises(InvalidArgument, match="unknown run-config keys: lr2"):
        merge_run_config({"lr": 0.1}, {"lr2": 0.5})


PROBE = Path(__file__).parents[2] / "integration" / "apps" / "probe"


def test_a_run_keeps_the_federation_options_it_was_submitted_with(runs: Runs) -> None:
    content, fab_hash = build_fab_bytes(PROBE)
    options: UserConfig = {"options.num-supernodes": 100_000, "options.backend.name": "local"}
    run_id = runs.submit(content, fab_hash, {}, "local", federation_options=options)
    assert runs.state.get_run(run_id).federation_options == options
    deployed = runs.submit(content, fab_hash, {}, "local")
    assert runs.state.get_run(deployed).federation_options == {}


@pytest.mark.parametrize("num", [0, -3, 100_001, "2", 2.0, True])
def test_a_bad_num_supernodes_is_refused_at_submit(runs: Runs, num: object) -> None:
    content, fab_hash = build_fab_bytes(PROBE)
    with pytest.raises(InvalidArgument, match=BAD_NUM):
        runs.submit(
            content,
            fab_hash,
            {},
            "local",
            federation_options={"options.num-supernodes": num},  # type: ignore[dict-item]
        )
    assert runs.state.list_runs() == []
