"""Objects the run's own app process stages as files: checked against their ids, then moved
into the store (no copy), within the same quotas as pushed objects; the staging directory
goes when the run finishes or the SuperLink restarts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bounded_state import Make, new_run

from corolla.common.errors import InvalidArgument, NotFound, ResourceExhausted
from corolla.common.objectfiles import file_name
from corolla.common.objects import object_id_of
from corolla.superlink.objects import missing_response
from corolla.superlink.state import RunStatus, SqliteLinkState, SubStatus

pytestmark = pytest.mark.timeout(60)


def stage(directory: Path, data: bytes) -> Path:
    path = directory / file_name(object_id_of(data))
    path.write_bytes(data)
    return path


@pytest.fixture
def state(tmp_path: Path) -> SqliteLinkState:
    opened = SqliteLinkState(tmp_path / "state.db")
    yield opened  # type: ignore[misc]
    opened.close()


def test_a_staged_object_is_checked_and_moved_into_the_store(state: SqliteLinkState) -> None:
    run_id, data = new_run(state), os.urandom(3 << 20)
    staging = state.staging_directory(run_id, create=True)
    assert staging is not None and staging.stat().st_mode & 0o777 == 0o700
    path = stage(staging, data)
    inode = path.stat().st_ino
    state.adopt_file(run_id, object_id_of(data), path)
    assert not path.exists()
    stored = Path(f"{state.database}.objects") / file_name(object_id_of(data))
    assert stored.stat().st_ino == inode  # moved, not copied
    assert b"".join(state.read_object(object_id_of(data), 1 << 20)) == data
    assert state.run_object_ids(run_id, [object_id_of(data)]) == {object_id_of(data)}


def test_staged_content_that_does_not_match_its_id_is_refused(state: SqliteLinkState) -> None:
    run_id = new_run(state)
    staging = state.staging_directory(run_id, create=True)
    assert staging is not None
    claimed = object_id_of(b"what the id says")
    path = staging / file_name(claimed)
    path.write_bytes(b"something else")
    with pytest.raises(InvalidArgument, match="does not match"):
        state.adopt_file(run_id, claimed, path)
    assert not path.exists()
    assert state.missing_objects([claimed]) == [claimed]
    with pytest.raises(NotFound):
        state.adopt_file(run_id, claimed, path)  # nothing staged any more


def test_a_staged_object_over_the_quota_is_refused(make: Make, tmp_path: Path) -> None:
    state = make(max_run_object_bytes=1000)
    if state.database == ":memory:":
        assert state.staging_directory(new_run(state), create=True) is None
        return
    run_id, data = new_run(state), os.urandom(2000)
    staging = state.staging_directory(run_id, create=True)
    assert staging is not None
    with pytest.raises(ResourceExhausted, match="quota"):
        state.adopt_file(run_id, object_id_of(data), stage(staging, data))
    assert state.missing_objects([object_id_of(data)]) == [object_id_of(data)]


def test_an_object_stored_already_is_only_referenced(state: SqliteLinkState) -> None:
    run_a, run_b, data = new_run(state), new_run(state), os.urandom(5000)
    state.store_object(run_a, object_id_of(data), data)
    staging = state.staging_directory(run_b, create=True)
    assert staging is not None
    path = stage(staging, data)
    state.adopt_file(run_b, object_id_of(data), path)
    assert not path.exists()
    assert state.run_object_ids(run_b, [object_id_of(data)]) == {object_id_of(data)}


def test_missing_objects_takes_staged_files_in_and_asks_for_the_rest(
    state: SqliteLinkState,
) -> None:
    run_id = new_run(state)
    staged, pushed = os.urandom(4000), os.urandom(4000)
    staging = state.staging_directory(run_id, create=True)
    assert staging is not None
    stage(staging, staged)
    ids = [object_id_of(staged), object_id_of(pushed)]
    assert list(missing_response(state, run_id, ids, staging).object_ids) == [ids[1]]
    assert list(missing_response(state, run_id, ids).object_ids) == [ids[1]]  # stored now


def test_the_staging_directory_goes_with_the_run_and_on_restart(tmp_path: Path) -> None:
    state = SqliteLinkState(tmp_path / "state.db")
    try:
        finished, running = new_run(state), new_run(state)
        assert state.staging_directory(finished) is None  # made only when asked to
        done = state.staging_directory(finished, create=True)
        left = state.staging_directory(running, create=True)
        assert done is not None and left is not None
        stage(done, b"x" * 100)
        state.update_run_status(finished, RunStatus.FINISHED, SubStatus.STOPPED)
        assert not done.exists() and state.staging_directory(finished) is None
        stage(left, b"y" * 100)
    finally:
        state.close()
    reopened = SqliteLinkState(tmp_path / "state.db")
    try:
        assert not left.exists()  # what a crashed app process staged is not kept
    finally:
        reopened.close()
