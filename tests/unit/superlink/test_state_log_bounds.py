"""A run's log within its quota: the oldest lines go, one marker stands where they were, readers
keep their place; `get_logs` answers in bounded batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from bounded_state import new_run

from corolla.common.errors import InvalidArgument
from corolla.superlink.state import LinkState, SqliteLinkState
from corolla.superlink.state.base import StateLimits

MakeAny = Callable[..., LinkState]

pytestmark = pytest.mark.timeout(60)

MARKER = "[corolla] "


def lines(first: int, count: int) -> list[str]:
    return [f"line {i:04d}" for i in range(first, first + count)]  # 9 bytes each


def read_all(state: LinkState, run_id: int, after: int = 0) -> tuple[list[str], int]:
    out: list[str] = []
    while True:
        batch, after = state.get_logs(run_id, after)
        if not batch:
            return out, after
        out += batch


def test_the_oldest_lines_go_and_one_marker_stands_in_their_place(make_any: MakeAny) -> None:
    state = make_any(max_run_log_bytes=90)
    run_id = new_run(state)
    state.append_logs(run_id, lines(0, 10))  # exactly the quota
    assert state.get_logs(run_id) == (lines(0, 10), 10)
    state.append_logs(run_id, lines(10, 1))
    marker = (
        "[corolla] 1 earlier log lines (9 bytes) dropped: the run's log is over its quota of "
        "90 bytes"
    )
    assert state.get_logs(run_id) == ([marker, *lines(1, 10)], 11)
    state.append_logs(run_id, lines(11, 5))
    got, end = state.get_logs(run_id)
    assert got[0] == marker.replace("1 earlier log lines (9", "6 earlier log lines (54")
    assert (got[1:], end) == (lines(6, 10), 16)
    assert sum(line.startswith(MARKER) for line in got) == 1


def test_readers_keep_their_place_across_drops(make_any: MakeAny) -> None:
    state = make_any(max_run_log_bytes=90)
    run_id = new_run(state)
    state.append_logs(run_id, lines(0, 10))
    behind, ahead = 3, 8  # where two followers stopped reading
    state.append_logs(run_id, lines(10, 6))  # drops lines 0..5
    got, after = state.get_logs(run_id, behind)
    assert got[0].startswith(MARKER) and got[1:] == lines(6, 10)  # told, then goes on
    got, after_ahead = state.get_logs(run_id, ahead)
    assert got == lines(8, 8)  # past the dropped lines: as if nothing happened
    assert after == after_ahead == 16
    state.append_logs(run_id, lines(16, 2))
    assert state.get_logs(run_id, after) == (lines(16, 2), 18)


def test_one_append_bigger_than_the_quota_keeps_its_newest_lines(make_any: MakeAny) -> None:
    state = make_any(max_run_log_bytes=90)
    run_id = new_run(state)
    state.append_logs(run_id, lines(0, 30))
    got, end = state.get_logs(run_id)
    assert got[0].startswith("[corolla] 20 earlier log lines (180 bytes) dropped")
    assert (got[1:], end) == (lines(20, 10), 30)
    state.append_logs(run_id, ["x" * 200])  # alone over the quota: it goes too
    got, end = state.get_logs(run_id)
    assert got == [
        "[corolla] 31 earlier log lines (470 bytes) dropped: the run's log is over "
        "its quota of 90 bytes"
    ]
    assert end == 31


def test_the_log_stays_bounded_however_long_the_run_talks(make_any: MakeAny) -> None:
    state = make_any(max_run_log_bytes=1000)
    run_id = new_run(state)
    for start in range(0, 5000, 50):
        state.append_logs(run_id, lines(start, 50))
    got, end = read_all(state, run_id)
    assert end == 5000
    assert got[0].startswith("[corolla] 4889 earlier log lines")
    assert got[1:] == lines(4889, 111)
    assert sum(len(line.encode()) for line in got[1:]) <= 1000


def test_the_quota_counts_utf8_bytes(make_any: MakeAny) -> None:
    state = make_any(max_run_log_bytes=10)
    run_id = new_run(state)
    state.append_logs(run_id, ["ééééé"])  # 10 bytes
    assert state.get_logs(run_id) == (["ééééé"], 1)
    state.append_logs(run_id, ["é"])
    got, _ = state.get_logs(run_id)
    assert got[0].startswith("[corolla] 1 earlier log lines (10 bytes)")
    with pytest.raises(InvalidArgument, match="not valid text"):
        state.append_logs(run_id, ["half a surrogate \ud800"])


def test_the_count_survives_a_restart(tmp_path: Path) -> None:
    limits = StateLimits(max_run_log_bytes=90)
    state = SqliteLinkState(tmp_path / "state.db", limits=limits)
    run_id = new_run(state)
    state.append_logs(run_id, lines(0, 9))
    state.close()
    state = SqliteLinkState(tmp_path / "state.db", limits=limits)
    try:
        state.append_logs(run_id, lines(9, 2))
        got, end = state.get_logs(run_id)
        assert got[0].startswith("[corolla] 1 earlier log lines")
        assert (got[1:], end) == (lines(1, 10), 11)
    finally:
        state.close()


def test_get_logs_answers_in_bounded_batches(make_any: MakeAny) -> None:
    state = make_any(max_run_log_bytes=1 << 20, log_batch_bytes=1000)
    run_id = new_run(state)
    text = [f"{i:03d}" + "x" * 96 for i in range(100)]  # 100 bytes each
    state.append_logs(run_id, text)
    batches, after = [], 0
    while batch := state.get_logs(run_id, after)[0]:
        batches.append(batch)
        after += len(batch)
    assert [line for batch in batches for line in batch] == text
    assert all(sum(len(line) + 8 for line in batch) <= 1000 for batch in batches)
    assert len(batches) == 12  # 9 lines (with their framing) per batch
    assert state.get_logs(run_id, 0, max_bytes=250) == (text[:2], 2)
    state.append_logs(run_id, ["y" * 5000])  # longer than a batch: comes alone
    assert state.get_logs(run_id, 100) == (["y" * 5000], 101)
    with pytest.raises(InvalidArgument):
        state.get_logs(run_id, 0, max_bytes=0)


def test_a_long_log_reads_back_whole_and_in_order(make_any: MakeAny) -> None:
    state = make_any(max_run_log_bytes=1 << 20, log_batch_bytes=1 << 20)
    run_id = new_run(state)
    for first in range(0, 2000, 500):
        state.append_logs(run_id, lines(first, 500))
    assert state.get_logs(run_id, 10) == (lines(10, 1990), 2000)  # pages of it, one answer
    assert read_all(state, run_id, 1999) == (lines(1999, 1), 2000)
