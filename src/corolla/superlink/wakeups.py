"""Coroutines waiting for state changes: the Fleet API's long polls, on its event loop.

The state tells its listeners of every change a wait could be waiting for, from the thread that
made it (`LinkState.add_listener`); `Wakeups` carries that onto the loop. A waiter watches its
key *before* it looks at the state, so a change between its look and its wait still wakes it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Hashable, Iterator

from corolla.superlink.state._signals import ALL


class Wakeups:
    """Every method but `notify` runs on ``loop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters: dict[Hashable, set[asyncio.Future[Hashable]]] = {}
        self._changes: collections.deque[Hashable] = collections.deque()
        self._scheduled = threading.Lock()  # held while a `_deliver` is due on the loop

    def notify(self, key: Hashable) -> None:
        """A state listener: from any thread, never blocks. A burst of changes (instructions
        for ten thousand nodes) reaches the loop as one callback, not one each."""
        self._changes.append(key)
        if self._scheduled.acquire(blocking=False):
            try:
                self._loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # the loop has closed: nobody waits any more
                self._scheduled.release()

    def _deliver(self) -> None:
        self._scheduled.release()  # changes noted from now on schedule another delivery
        while self._changes:
            self._changed(self._changes.popleft())

    def _changed(self, key: Hashable) -> None:
        if key == ALL:
            woken = [future for waiters in self._waiters.values() for future in waiters]
        else:
            woken = list(self._waiters.get(key, ()))
        for future in woken:
            if not future.done():
                future.set_result(key)

    @contextlib.contextmanager
    def watching(self, key: Hashable) -> Iterator[asyncio.Future[Hashable]]:
        """A future that is done once ``key`` changed after this call (its result: ``key``),
        or everything did (`wake_all`: its result is `ALL`)."""
        future: asyncio.Future[Hashable] = self._loop.create_future()
        waiters = self._waiters.setdefault(key, set())
        waiters.add(future)
        try:
            yield future
        finally:
            waiters.discard(future)
            if not waiters:
                self._waiters.pop(key, None)

    @staticmethod
    async def wait(future: asyncio.Future[Hashable], timeout: float) -> bool:
        """Until ``future`` is done or ``timeout`` seconds passed; True if everything woke
        (`wake_all`: shutting down, or a run ended)."""
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(future), timeout) == ALL
        return False

    @property
    def waiting(self) -> int:
        """How many are watching now."""
        return sum(len(waiters) for waiters in self._waiters.values())
