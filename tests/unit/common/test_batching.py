"""`GroupCommit`: concurrent submitters share batches, each gets its own outcome."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from corolla.common.batching import GroupCommit, LoopBatch
from corolla.common.errors import CorollaError, InvalidArgument, Unavailable

pytestmark = pytest.mark.timeout(30)


def test_alone_a_call_is_a_batch_of_one() -> None:
    batches: list[list[int]] = []

    def run(items: Sequence[int]) -> list[CorollaError | None]:
        batches.append(list(items))
        return [None] * len(items)

    commit = GroupCommit(run)
    commit.submit(1)
    commit.submit(2)
    assert batches == [[1], [2]]


def test_concurrent_submitters_share_batches_and_get_their_own_outcomes() -> None:
    batches: list[list[int]] = []
    first_running, release = threading.Event(), threading.Event()

    def run(items: Sequence[int]) -> list[CorollaError | None]:
        batches.append(list(items))
        if len(batches) == 1:  # hold the first batch until the others are queued
            first_running.set()
            assert release.wait(10)
        return [InvalidArgument(f"odd {i}") if i % 2 else None for i in items]

    commit = GroupCommit(run, max_batch=3)
    outcomes: dict[int, str] = {}

    def submit(i: int) -> None:
        try:
            commit.submit(i)
            outcomes[i] = "ok"
        except InvalidArgument as exc:
            outcomes[i] = str(exc)

    leader = threading.Thread(target=submit, args=(0,))
    leader.start()
    assert first_running.wait(10)
    others = [threading.Thread(target=submit, args=(i,)) for i in range(1, 8)]
    for thread in others:
        thread.start()
    while len(commit._queue) < 7:  # all queued behind the running batch
        threading.Event().wait(0.01)
    release.set()
    for thread in [leader, *others]:
        thread.join(10)
    assert batches[0] == [0]
    assert sorted(i for batch in batches[1:] for i in batch) == list(range(1, 8))
    assert all(len(batch) <= 3 for batch in batches)
    assert len(batches) == 1 + 3  # 7 queued items in batches of at most 3
    assert outcomes == {i: ("ok" if i % 2 == 0 else f"odd {i}") for i in range(8)}


def test_a_failed_batch_fails_each_of_its_items_and_the_next_batch_runs() -> None:
    calls = 0

    def run(items: Sequence[int]) -> list[CorollaError | None]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unavailable("database gone")
        return [None] * len(items)

    commit = GroupCommit(run)
    with pytest.raises(Unavailable, match="database gone"):
        commit.submit(1)
    commit.submit(2)  # nobody is left leading a dead batch


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError):
        GroupCommit(lambda items: [None] * len(items), max_batch=0)


def test_coroutines_of_one_turn_share_a_batch_on_a_thread_and_get_their_own_outcomes() -> None:
    batches: list[list[int]] = []
    threads: set[str] = set()

    def run(items: list[int]) -> list[int | CorollaError]:
        threads.add(threading.current_thread().name)
        batches.append(items)
        return [InvalidArgument(f"odd {i}") if i % 2 else i * 10 for i in items]

    async def main() -> list[object]:
        batch: LoopBatch[int, int] = LoopBatch(run, max_batch=4)
        return await asyncio.gather(*(batch.submit(i) for i in range(6)), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert batches == [[0, 1, 2, 3], [4, 5]]  # one turn, in batches of at most 4
    assert threading.current_thread().name not in threads  # not on the loop's thread
    assert [o if isinstance(o, int) else str(o) for o in outcomes] == [
        0,
        "odd 1",
        20,
        "odd 3",
        40,
        "odd 5",
    ]


def test_a_failed_loop_batch_fails_its_items_and_the_next_one_runs() -> None:
    calls = 0

    def run(items: list[int]) -> list[int | CorollaError]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unavailable("database gone")
        return list(items)

    async def main() -> None:
        batch: LoopBatch[int, int] = LoopBatch(run)
        with pytest.raises(Unavailable):
            await batch.submit(1)
        assert await batch.submit(2) == 2

    asyncio.run(main())
