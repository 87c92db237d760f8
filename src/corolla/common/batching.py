"""Group commit: writes wanted by many threads (`GroupCommit`) or coroutines (`LoopBatch`) at
once, done as one batch.

A thread that submits while no batch is running leads: it runs the batch of everything
submitted so far (its own item included) and hands the results out; threads that submit
meanwhile wait, and the first of them leads the next batch. Under load, N concurrent writers
cost N / batch transactions (and no queue of threads on the database's lock); alone, a call
costs what it did.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from corolla.common.errors import CorollaError, Unavailable

_T = TypeVar("_T")

WAIT_TIMEOUT = 120.0  # seconds a submitter waits for its batch (a bound, never reached)


@dataclass(eq=False)
class _Slot(Generic[_T]):
    item: _T
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # its turn to run a batch (with its own item in it)
    finished: bool = False
    error: BaseException | None = None


class GroupCommit(Generic[_T]):
    """``run(items)`` does a batch: one outcome per item, None or the `CorollaError` of that
    item alone; if it raises, every item of the batch fails with that."""

    def __init__(
        self, run: Callable[[Sequence[_T]], Sequence[CorollaError | None]], max_batch: int = 256
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch}")
        self._run = run
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Slot[_T]] = []
        self._leading = False

    def submit(self, item: _T) -> None:
        """Returns once ``item``'s batch is done; raises the item's error."""
        slot = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            slot.lead = not self._leading
            self._leading = True
        if not slot.lead and not slot.wake.wait(WAIT_TIMEOUT):
            with self._lock:
                if not slot.lead:  # (handed the lead just now: it leads)
                    if slot in self._queue:  # not taken yet: never written
                        self._queue.remove(slot)
                    raise Unavailable("a batched write did not finish in time; retry")
        if slot.lead and not slot.finished:
            self._lead()  # first in the queue: its item is in this batch
        if not slot.finished:
            raise RuntimeError("a batch left out its leader's item")
        if slot.error is not None:
            raise slot.error

    def _lead(self) -> None:
        with self._lock:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
        failure: BaseException | None = None
        try:
            outcomes: Sequence[BaseException | None] = self._run([slot.item for slot in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
        except BaseException as exc:  # the whole batch failed
            outcomes, failure = [exc] * len(batch), exc
        finally:
            self._hand_over()
        for slot, outcome in zip(batch, outcomes, strict=True):
            slot.error = outcome
            slot.finished = True
            slot.wake.set()
        if failure is not None and not isinstance(failure, Exception):
            raise failure

    def _hand_over(self) -> None:
        """The first waiting submitter leads the next batch; none waiting: nobody leads."""
        with self._lock:
            if not self._queue:
                self._leading = False
                return
            nxt = self._queue[0]
            nxt.lead = True
        nxt.wake.set()


_I = TypeVar("_I")
_R = TypeVar("_R")


class LoopBatch(Generic[_I, _R]):
    """Group commit for coroutines: the items submitted on an event loop in one turn of it go
    to ``run`` together, on a thread; while one batch runs, the next one gathers. ``run(items)``
    gives one outcome per item: its result, or the `CorollaError` of that item alone; if it
    raises, every item of the batch fails with that."""

    def __init__(
        self, run: Callable[[list[_I]], Sequence[_R | CorollaError]], max_batch: int = 256
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch}")
        self._run = run
        self._max_batch = max_batch
        self._waiting: list[tuple[_I, asyncio.Future[_R]]] = []
        self._running = False
        self._task: asyncio.Future[None] | None = None  # the batch running now

    async def submit(self, item: _I) -> _R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_R] = loop.create_future()
        self._waiting.append((item, future))
        if not self._running:
            self._running = True
            loop.call_soon(self._next)  # after this turn of the loop: the others join
        return await future

    def _next(self) -> None:
        batch = self._waiting[: self._max_batch]
        self._waiting = self._waiting[self._max_batch :]
        if not batch:
            self._running = False
            return
        self._task = asyncio.ensure_future(self._batch(batch))

    async def _batch(self, batch: list[tuple[_I, asyncio.Future[_R]]]) -> None:
        try:
            outcomes = await asyncio.to_thread(self._run, [item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
        except BaseException as exc:  # every item of the batch gets it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # its waiter has gone
                    continue
                if isinstance(outcome, CorollaError):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        finally:
            self._next()
