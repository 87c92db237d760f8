"""Objects pushed to the SuperLink: streamed to disk as they arrive, within per-object and per-run
quotas checked before any data is written, and collected when their runs finish."""

from __future__ import annotations

import os
import sqlite3
import tracemalloc
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from bounded_state import Make, new_run

from corolla.common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from corolla.common.objects import encode_chunks, object_id_of
from corolla.superlink.objects import store_pushed
from corolla.superlink.runs import Runs
from corolla.superlink.state import RunStatus, SqliteLinkState, SubStatus
from corolla.superlink.state._schema import SCHEMA_VERSION
from corolla.superlink.state.base import StateLimits

pytestmark = pytest.mark.timeout(60)


def files(state: SqliteLinkState) -> list[Path]:
    """Every file of the objects directory (none for an in-memory state)."""
    directory = Path(f"{state.database}.objects")
    return sorted(directory.iterdir()) if directory.is_dir() else []


class Frames:
    """Frames of ``datas``, counting how many the receiver took."""

    def __init__(self, datas: Iterable[bytes], chunk_size: int = 1 << 20) -> None:
        self.datas, self.chunk_size, self.taken = list(datas), chunk_size, 0

    def __iter__(self) -> Iterator[bytes]:
        for data in self.datas:
            for frame in encode_chunks(object_id_of(data), data, self.chunk_size):
                self.taken += 1
                yield frame


def test_a_pushed_object_goes_to_a_private_temporary_file_as_it_arrives(tmp_path: Path) -> None:
    state = SqliteLinkState(tmp_path / "state.db")
    try:
        run_id, data = new_run(state), os.urandom(3 << 20)
        object_id = object_id_of(data)
        sink = state.open_object(run_id, object_id, len(data))
        sink.write(memoryview(data)[: 1 << 20])
        [part] = files(state)
        assert part.name.startswith(".tmp-")
        assert part.stat().st_size == 1 << 20
        assert part.stat().st_mode & 0o777 == 0o600
        assert state.missing_objects([object_id]) == [object_id]  # not readable yet
        sink.write(memoryview(data)[1 << 20 :])
        sink.commit()
        assert state.missing_objects([object_id]) == []
        assert b"".join(state.read_object(object_id, 1 << 20)) == data
        assert [p.name.startswith(".tmp-") for p in files(state)] == [False]
    finally:
        state.close()


def test_the_superlink_never_holds_a_pushed_object_whole(tmp_path: Path) -> None:
    state = SqliteLinkState(tmp_path / "state.db")
    try:
        run_id, data = new_run(state), os.urandom(32 << 20)
        frames = Frames([data])
        tracemalloc.start()
        try:
            response = store_pushed(state, run_id, frames)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.objects_stored == 1
        assert peak < 8 << 20  # a few 1 MiB frames, never the 32 MiB object
        assert b"".join(state.read_object(object_id_of(data), 1 << 20)) == data
    finally:
        state.close()


def test_a_push_over_the_runs_quota_is_refused_on_its_first_frame(make: Make) -> None:
    state = make(max_run_object_bytes=1000)
    run_id, other_run = new_run(state), new_run(state)
    state.store_object(run_id, object_id_of(b"a" * 600), b"a" * 600)
    frames = Frames([os.urandom(500)], chunk_size=100)
    with pytest.raises(
        ResourceExhausted,
        match=rf"run {run_id} stores 600 bytes of objects; object \w+ \(500 bytes\) would take "
        r"it over its quota of 1000 bytes \(--max-run-object-bytes\)",
    ):
        store_pushed(state, run_id, frames)
    assert frames.taken == 1  # refused before its data came
    assert len(files(state)) == (1 if state.database != ":memory:" else 0)  # nothing partial
    assert state.missing_objects([object_id_of(frames.datas[0])]) == [object_id_of(frames.datas[0])]
    assert store_pushed(state, other_run, Frames(frames.datas)).objects_stored == 1  # per run


def test_an_object_over_the_object_limit_is_refused(make: Make) -> None:
    state = make(max_object_bytes=100)
    run_id, data = new_run(state), os.urandom(101)
    frames = Frames([data], chunk_size=10)
    with pytest.raises(ResourceExhausted, match=r"101 bytes, over the limit .*--max-object-bytes"):
        store_pushed(state, run_id, frames)
    assert frames.taken == 1
    with pytest.raises(ResourceExhausted):
        state.store_object(run_id, object_id_of(data), data)
    assert files(state) == []
    state.store_object(run_id, object_id_of(data[:100]), data[:100])  # at the limit: fine


def test_pushes_in_progress_count_against_the_quota(make: Make) -> None:
    state = make(max_run_object_bytes=1000)
    run_id = new_run(state)
    first, second = os.urandom(600), os.urandom(500)
    sink = state.open_object(run_id, object_id_of(first), len(first))
    with pytest.raises(ResourceExhausted, match="stores 600 bytes"):
        state.open_object(run_id, object_id_of(second), len(second))
    sink.write(memoryview(first)[:10])
    sink.discard()
    assert files(state) == []
    assert store_pushed(state, run_id, Frames([second])).objects_stored == 1


def broken(frames: Iterable[bytes], after: int) -> Iterator[bytes]:
    for i, frame in enumerate(frames):
        if i == after:
            raise ConnectionResetError("the sender went away")
        yield frame


def test_a_failed_push_leaves_nothing_and_gives_back_its_share(make: Make) -> None:
    state = make(max_run_object_bytes=1000)
    run_id, data = new_run(state), os.urandom(900)
    tampered = list(Frames([data], chunk_size=300))
    tampered[-1] = tampered[-1][:-1] + bytes([tampered[-1][-1] ^ 1])
    with pytest.raises(InvalidArgument, match="does not match"):
        store_pushed(state, run_id, tampered)
    with pytest.raises(ConnectionResetError):
        store_pushed(state, run_id, broken(Frames([data], chunk_size=300), after=2))
    with pytest.raises(InvalidArgument, match="incomplete"):
        store_pushed(state, run_id, list(Frames([data], chunk_size=300))[:2])
    assert files(state) == []
    assert state.missing_objects([object_id_of(data)]) == [object_id_of(data)]
    assert store_pushed(state, run_id, Frames([data], chunk_size=300)).objects_stored == 1


def test_an_object_stored_already_is_not_charged_and_counts_once_verified(make: Make) -> None:
    state = make(max_run_object_bytes=1000)
    owner, other = new_run(state), new_run(state)
    data = os.urandom(900)
    object_id = object_id_of(data)
    state.store_object(owner, object_id, data)
    sink = state.open_object(other, object_id, len(data))
    sink.write(memoryview(data))
    assert state.run_object_ids(other, [object_id]) == set()  # not before the push is whole
    sink.commit()
    assert state.run_object_ids(other, [object_id]) == {object_id}
    assert store_pushed(state, other, Frames([os.urandom(900)])).objects_stored == 1


def test_a_finished_run_stores_no_more_objects(make: Make) -> None:
    state = make()
    run_id, data = new_run(state), os.urandom(100)
    sink = state.open_object(run_id, object_id_of(data), len(data))
    sink.write(memoryview(data))
    state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.STOPPED)
    with pytest.raises(FailedPrecondition, match="finished"):
        sink.commit()
    with pytest.raises(FailedPrecondition, match="finished"):
        state.store_object(run_id, object_id_of(data), data)
    assert files(state) == []
    assert state.missing_objects([object_id_of(data)]) == [object_id_of(data)]


# -- garbage collection -------------------------------------------------------------------------
def test_a_run_stopped_while_pending_loses_its_objects_but_not_shared_ones(make: Make) -> None:
    state = make()
    runs = Runs(state)
    run_a, run_b = new_run(state), new_run(state)
    own, shared = b"only a" * 100, b"shared" * 100
    state.store_object(run_a, object_id_of(own), own)
    state.store_object(run_a, object_id_of(shared), shared)
    state.store_object(run_b, object_id_of(shared), shared)
    assert runs.stop(run_a)  # no app process ever attached
    assert state.missing_objects([object_id_of(own), object_id_of(shared)]) == [object_id_of(own)]
    assert runs.stop(run_b)
    assert state.missing_objects([object_id_of(shared)]) == [object_id_of(shared)]
    assert files(state) == []


def test_the_checkpoint_objects_of_an_unfinished_run_survive(make: Make) -> None:
    state = make()
    runs = Runs(state)
    run_id, weights = new_run(state), os.urandom(1000)
    assert runs.start(run_id)
    runs.mark_running(run_id)
    state.store_object(run_id, object_id_of(weights), weights)
    state.set_checkpoint(run_id, 1, b"ctx", [object_id_of(weights)])
    assert runs.requeue(run_id, "the ServerApp process was lost")
    assert state.missing_objects([object_id_of(weights)]) == []
    assert runs.fail(run_id, "gave up")
    assert state.missing_objects([object_id_of(weights)]) == [object_id_of(weights)]


def test_objects_of_runs_finished_before_are_collected_on_open(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state = SqliteLinkState(path)
    done, going = new_run(state), new_run(state)
    state.store_object(done, "old", b"o" * 100)
    state.store_object(going, "kept", b"k" * 100)
    state.close()
    conn = sqlite3.connect(path)  # finished without its objects collected (crash, older version)
    with conn:
        conn.execute(
            "UPDATE runs SET status = 'finished', sub_status = 'completed' WHERE run_id = ?",
            (done,),
        )
    conn.close()
    state = SqliteLinkState(path)
    try:
        assert state.missing_objects(["old", "kept"]) == ["old"]
        assert len(files(state)) == 1
    finally:
        state.close()


def test_usage_survives_a_restart_and_a_migration(tmp_path: Path) -> None:
    path, limits = tmp_path / "state.db", StateLimits(max_run_object_bytes=1000)
    state = SqliteLinkState(path, limits=limits)
    run_id = new_run(state)
    state.store_object(run_id, "first", b"f" * 600)
    state.append_logs(run_id, ["hello"])
    state.close()
    for downgrade in (False, True):
        if downgrade:  # a version-3 database had no run_usage table: it is counted again
            conn = sqlite3.connect(path)
            with conn:
                conn.execute("DROP TABLE run_usage")
                conn.execute("UPDATE schema_version SET version = 3")
            conn.close()
        state = SqliteLinkState(path, limits=limits)
        try:
            with pytest.raises(ResourceExhausted, match="stores 600 bytes"):
                state.store_object(run_id, "second", b"s" * 500)
            assert state.get_logs(run_id) == (["hello"], 1)
        finally:
            state.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        conn.close()


def test_limits_must_be_positive() -> None:
    assert StateLimits().max_object_bytes == 16 << 30
    assert StateLimits().max_run_object_bytes == 64 << 30
    assert StateLimits().max_run_log_bytes == 32 << 20
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InvalidArgument, match="max_run_log_bytes"):
            StateLimits(max_run_log_bytes=bad)  # type: ignore[arg-type]  # checked at run time
