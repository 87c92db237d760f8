"""A node's open `Fleet.Connect` stream, on the Fleet API's event loop.

Two coroutines per stream: the reader takes what the node sends (heartbeats, each answered at
once; acknowledgements), the pusher sends the node's instructions down as soon as the state
has them (`Wakeups`) and tells the node which of its runs ended. Neither holds a thread while
it waits, so a SuperLink keeps one stream per node open for thousands of nodes.

Delivery is that of `Fleet.PullMessages` (`LinkState.pull_instructions`, `ack_instructions`):
an instruction goes down once per stream and counts as received only when the node
acknowledges (or answers) it; one the node never acknowledged comes again on its next stream,
so a stream cut mid-flight loses nothing. (A SuperNode holds an acknowledgement back for a
moment, so that a quick reply carries it: one message up instead of two.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any, Protocol

from google.protobuf.message import DecodeError

from corolla.common.batching import LoopBatch
from corolla.common.errors import CorollaError, InvalidArgument, NotFound
from corolla.common.grpc import status_for, status_number
from corolla.common.protocol import MAX_ACKS, check_heartbeat_interval
from corolla.proto.v1 import fleet_pb2 as fpb
from corolla.proto.v1 import message_pb2 as mpb
from corolla.superlink.messages import from_stored
from corolla.superlink.state import LinkState, StoredMessage
from corolla.superlink.wakeups import Wakeups

log = logging.getLogger(__name__)

RELOOK_SECONDS = 30.0  # the pusher looks again after this long even if nothing woke it
MAX_BATCH_NODES = 256  # nodes whose pulls (or pushes) one transaction takes (it holds the lock)
MAX_RUN_IDS = 1024  # active runs one heartbeat may name


class Writer(Protocol):
    async def write(self, message: Any) -> None: ...


Pull = tuple[int, list[str]]  # a node, the instructions it acknowledges
Push = tuple[int, list[mpb.Message]]  # a node, the replies it pushes


def take_batch(state: LinkState, limit: int) -> Callable[[list[Pull]], list[TakeOutcome]]:
    """The pulls of the streams woken together, taken in one transaction
    (`LinkState.take_instructions`): ten thousand nodes woken by one broadcast cost tens of
    transactions, not ten thousand. (For `LoopBatch`.)"""

    def take(pulls: list[Pull]) -> list[TakeOutcome]:
        merged: dict[int, list[str]] = {}
        for node_id, acks in pulls:
            merged.setdefault(node_id, []).extend(acks)
        taken = state.take_instructions(merged, limit)
        outcomes: list[TakeOutcome] = []
        given: set[int] = set()
        for node_id, _ in pulls:
            if node_id not in taken:
                outcomes.append(NotFound(f"node {node_id} is not registered (register again)"))
            else:  # two streams of one node (one about to end): the first gets them
                outcomes.append([] if node_id in given else taken[node_id])
                given.add(node_id)
        return outcomes

    return take


TakeOutcome = list[StoredMessage] | CorollaError
Takes = LoopBatch[Pull, list[StoredMessage]]
Pushes = LoopBatch[Push, None]


class NodeStream:
    """One node's stream. ``finished(run_ids)`` (blocking: those of the runs that ended) is
    the servicer's; it runs on a thread."""

    def __init__(
        self,
        node_id: int,
        *,
        state: LinkState,
        wakeups: Wakeups,
        call: Writer,
        finished: Callable[[list[int]], list[int]],
        takes: Takes,
        pushes: Pushes,
        limit: int,
    ) -> None:
        self._node_id = node_id
        self._state = state
        self._wakeups = wakeups
        self._call = call
        self._finished = finished
        self._takes = takes
        self._pushes = pushes
        self._limit = limit
        self._pushing: set[asyncio.Future[None]] = set()  # pushes being stored
        self._writing = asyncio.Lock()  # one write at a time on a gRPC stream
        self._acks: list[str] = []  # received, not yet passed on to the state
        self._sent: set[str] = set()  # instructions sent on this stream, not acknowledged
        self._runs: list[int] = []  # the node's runs: of its last heartbeat, and sent since
        self._told: set[int] = set()  # runs whose end the node was told of on this stream
        self._changed: asyncio.Future[Hashable] | None = None  # the pusher's current watch
        self._beaten = asyncio.Event()  # the first heartbeat arrived

    async def run(self, requests: AsyncIterator[bytes]) -> None:
        """Until the node closes the stream (or a coroutine fails: its error is raised)."""
        reader = asyncio.ensure_future(self._read(requests))
        pusher = asyncio.ensure_future(self._push())
        try:
            done, _ = await asyncio.wait({reader, pusher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tasks = [reader, pusher, *self._pushing]
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
            if self._acks:  # received, not passed on yet: they do not end with the stream
                acks, self._acks = self._acks, []
                ack = asyncio.to_thread(self._state.ack_instructions, self._node_id, acks)
                with contextlib.suppress(CorollaError, asyncio.CancelledError):
                    await asyncio.shield(ack)
        for task in done:
            task.result()  # raises what ended it

    async def _write(self, down: fpb.NodeDown) -> None:
        async with self._writing:
            await self._call.write(down)

    def _poke(self) -> None:
        """Make the pusher look again."""
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(("node", self._node_id))

    # -- what the node sends ------------------------------------------------------------------

    async def _read(self, requests: AsyncIterator[bytes]) -> None:
        async for raw in requests:
            try:
                up = fpb.NodeUp.FromString(bytes(raw))
            except (DecodeError, ValueError) as exc:
                raise InvalidArgument(f"malformed NodeUp message: {exc}") from exc
            if not self._beaten.is_set() and not up.beat:
                raise InvalidArgument("the first message of a stream must be a heartbeat")
            if len(up.ack_message_ids) > MAX_ACKS:
                raise InvalidArgument(f"at most {MAX_ACKS} acknowledgements per message")
            if up.ack_message_ids:
                self._acks.extend(up.ack_message_ids)
                self._poke()
            if up.push:
                if len(up.replies) > self._limit:
                    raise InvalidArgument(f"at most {self._limit} replies per push")
                task = asyncio.ensure_future(self._push_replies(up.push, list(up.replies)))
                self._pushing.add(task)
                task.add_done_callback(self._pushing.discard)
            if up.beat:
                await self._heartbeat(up)

    async def _push_replies(self, number: int, replies: list[mpb.Message]) -> None:
        """Store them (with the pushes of other streams meanwhile), then say how it went."""
        try:
            await self._pushes.submit((self._node_id, replies))
            # Answered is acknowledged: the state never gives those instructions again.
            self._sent.difference_update(r.metadata.reply_to_message_id for r in replies)
            status = fpb.PushStatus()
        except CorollaError as exc:
            status = fpb.PushStatus(code=status_number(status_for(exc)), message=str(exc))
        await self._write(fpb.NodeDown(push=number, push_status=status))

    async def _heartbeat(self, up: fpb.NodeUp) -> None:
        if len(up.active_run_ids) > MAX_RUN_IDS:
            raise InvalidArgument(f"at most {MAX_RUN_IDS} active runs per heartbeat")
        interval = check_heartbeat_interval(up.heartbeat_interval)
        if not self._state.heartbeat_nowait(self._node_id, interval):
            await asyncio.to_thread(self._state.heartbeat, self._node_id, interval)
        # The node's runs: those it names, and those it was sent instructions of on this
        # stream whose end it has not been told of (it may name them only at its next beat).
        sent = {run_id for run_id in self._runs if run_id not in self._told}
        self._runs = sorted(set(up.active_run_ids) | sent)
        self._told.intersection_update(up.active_run_ids)
        finished = await self._ended(self._runs)
        self._told.update(finished)
        first = not self._beaten.is_set()
        self._beaten.set()
        await self._write(fpb.NodeDown(beat=up.beat, finished_run_ids=finished))
        if first:
            self._poke()

    async def _ended(self, run_ids: list[int]) -> list[int]:
        if not run_ids:
            return []
        known = self._state.ended_runs(run_ids)  # without blocking, if the state can tell
        return known if known is not None else await asyncio.to_thread(self._finished, run_ids)

    # -- what goes down -----------------------------------------------------------------------

    async def _push(self) -> None:
        await self._beaten.wait()  # the node's runs are known from then on
        key = ("node", self._node_id)
        query = True  # a look that queries the state (and finds a node removed meanwhile)
        while True:
            with self._wakeups.watching(key) as changed:
                self._changed = changed
                acks, self._acks = self._acks, []
                if acks or query or self._state.may_have_instructions(self._node_id):
                    stored = await self._takes.submit((self._node_id, acks))
                    self._sent.difference_update(acks)  # the state has them: never again
                else:
                    stored = []
                finished = await self._ended(self._runs)
                fresh = [m for m in stored if m.message_id not in self._sent]
                ended = [run_id for run_id in finished if run_id not in self._told]
                if fresh or ended:
                    self._sent.update(m.message_id for m in fresh)
                    self._runs = sorted(set(self._runs) | {m.run_id for m in fresh})
                    self._told.update(ended)
                    down = fpb.NodeDown(
                        messages=[from_stored(m) for m in fresh], finished_run_ids=ended
                    )
                    await self._write(down)
                    if len(stored) == self._limit and fresh:
                        continue  # there may be more
                if not changed.done():
                    await self._wakeups.wait(changed, RELOOK_SECONDS)
                # Woken for this node (not by a run's end, nor by the time): ask the state.
                query = changed.done() and changed.result() == key
                self._changed = None
