"""Coroutines waiting for state changes: the Fleet API's long polls, on its event loop.

The state tells its listeners of every change a wait could be waiting for, from the thread that
made it (`LinkState.add_listener`); `Wakeups` carries that onto the loop. A waiter watches its
key *before* it looks at the state, so a change between its look and its wait still wakes it.

A burst (a broadcast to ten thousand nodes, a run's end) wakes its waiters a slice at a time,
one slice per turn of the loop: what else is ready meanwhile (a heartbeat to answer) waits
behind one slice, not behind ten thousand woken streams.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Hashable, Iterator

from corolla.superlink.state._signals import ALL

WAKE_SLICE = 64  # waiters woken per turn of the loop


class Wakeups:
    """Every method but `notify` runs on ``loop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wake_slice: int = WAKE_SLICE) -> None:
        if wake_slice < 1:
            raise ValueError(f"wake_slice must be >= 1, not {wake_slice}")
        self._loop = loop
        self._slice = wake_slice
        self._waiters: dict[Hashable, set[asyncio.Future[Hashable]]] = {}
        self._changes: collections.deque[Hashable] = collections.deque()
        self._scheduled = threading.Lock()  # held while a `_deliver` is due on the loop
        self._due: collections.deque[tuple[asyncio.Future[Hashable], Hashable]] = (
            collections.deque()
        )  # to wake, with the key that woke them
        self._waking = False  # a `_wake` is due on the loop

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
            key = self._changes.popleft()
            if key == ALL:
                woken = [future for waiters in self._waiters.values() for future in waiters]
            else:
                woken = list(self._waiters.get(key, ()))
            self._due.extend((future, key) for future in woken)
        if not self._waking:
            self._wake()

    def _wake(self) -> None:
        """One slice of the due waiters; the rest at the next turn of the loop."""
        self._waking = False
        for _ in range(min(self._slice, len(self._due))):
            future, key = self._due.popleft()
            if not future.done():  # not woken yet by another key, nor cancelled
                future.set_result(key)
        if self._due:
            self._waking = True
            self._loop.call_soon(self._wake)

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
