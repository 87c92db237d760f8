"""`Wakeups`: changes noted from any thread wake the coroutines watching them, a slice at a
time."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from corolla.superlink.state._signals import ALL
from corolla.superlink.wakeups import Wakeups


def test_a_change_noted_on_another_thread_wakes_its_watcher_only() -> None:
    async def scenario() -> None:
        wakeups = Wakeups(asyncio.get_running_loop())
        with wakeups.watching(("node", 1)) as one, wakeups.watching(("node", 2)) as two:
            thread = threading.Thread(target=wakeups.notify, args=(("node", 1),))
            thread.start()
            thread.join(timeout=5)
            assert await wakeups.wait(one, timeout=5) is False  # woken, not by ALL
            assert one.result() == ("node", 1)
            for _ in range(3):
                await asyncio.sleep(0)
            assert not two.done()
        assert wakeups.waiting == 0

    asyncio.run(scenario())


def test_a_wait_ends_after_its_timeout_when_nothing_changed() -> None:
    async def scenario() -> None:
        wakeups = Wakeups(asyncio.get_running_loop())
        with wakeups.watching("key") as changed:
            assert await wakeups.wait(changed, timeout=0.01) is False
            assert not changed.done()

    asyncio.run(scenario())


def test_everything_wakes_on_all() -> None:
    async def scenario() -> None:
        wakeups = Wakeups(asyncio.get_running_loop())
        with wakeups.watching("a") as a, wakeups.watching("b") as b:
            wakeups.notify(ALL)
            assert await wakeups.wait(a, timeout=5) is True
            assert await wakeups.wait(b, timeout=5) is True

    asyncio.run(scenario())


def test_a_burst_wakes_one_slice_per_turn_of_the_loop_and_every_waiter_in_the_end() -> None:
    async def scenario() -> None:
        wakeups = Wakeups(asyncio.get_running_loop(), wake_slice=4)
        keys = [("node", n) for n in range(10)]
        with contextlib.ExitStack() as stack:
            futures = [stack.enter_context(wakeups.watching(key)) for key in keys]
            for key in keys:
                wakeups.notify(key)
            seen = []
            for _ in range(100):  # turns of the loop, at most
                woken = sum(future.done() for future in futures)
                if not seen or woken != seen[-1]:
                    seen.append(woken)
                if woken == len(keys):
                    break
                await asyncio.sleep(0)
            assert seen == [0, 4, 8, 10]  # a slice at a time, never all at once
            assert [future.result() for future in futures] == keys

    asyncio.run(scenario())


def test_a_waiter_gone_before_its_slice_came_is_skipped() -> None:
    async def scenario() -> None:
        wakeups = Wakeups(asyncio.get_running_loop(), wake_slice=1)
        with wakeups.watching("a") as a, wakeups.watching("b") as b:
            b.cancel()  # its waiter gave up
            wakeups.notify("b")
            wakeups.notify("a")
            assert await wakeups.wait(a, timeout=5) is False
            assert b.cancelled()

    asyncio.run(scenario())


def test_the_slice_must_be_positive() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="wake_slice"):
            Wakeups(loop, wake_slice=0)
    finally:
        loop.close()
