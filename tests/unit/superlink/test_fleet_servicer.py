"""Fleet servicer behaviour that the SuperNode relies on, against a real state.

`PullMessages` is a coroutine on an event loop of its own thread, as the SuperLink serves it
(`corolla.common.aioserver`); the other methods are called from the test's thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from run_helpers import instruction

from corolla.common.grpc import WaitSlots
from corolla.common.guard import Caller, Credential
from corolla.common.protocol import MAX_ACKS
from corolla.proto.v1 import fleet_pb2 as fpb
from corolla.superlink.fleet import FleetServicer
from corolla.superlink.state import LinkState, RunStatus, SubStatus
from corolla.superlink.wakeups import Wakeups

pytestmark = pytest.mark.timeout(30)

_T = TypeVar("_T")


class Context:
    """Stands in for the guarded call context: only used when a call fails."""

    def __init__(self, node_id: int) -> None:
        self.caller = Caller(Credential.NODE, node_id=node_id)

    def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"aborted: {code} {details}")


class AsyncContext(Context):
    async def abort(self, code: Any, details: str) -> None:  # type: ignore[override]
        raise AssertionError(f"aborted: {code} {details}")


class Loop:
    """An event loop running on its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self.submit(coro).result(20)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.close()


def servicer(state: LinkState, loop: Loop, **kwargs: Any) -> FleetServicer:
    wakeups = Wakeups(loop.loop)
    state.add_listener(wakeups.notify)
    return FleetServicer(state, wakeups=wakeups, **kwargs)


def pull(node_id: int, wait: float = 0.0, **fields: Any) -> fpb.FleetPullMessagesRequest:
    return fpb.FleetPullMessagesRequest(node_id=node_id, wait_seconds=wait, **fields)


def new_run(state: LinkState) -> int:
    return state.create_run(
        fab_id="p/a", fab_version="1", fab_hash="f" * 64, override_config={}, run_config={}
    )


def ids(response: fpb.FleetPullMessagesResponse) -> list[str]:
    return [m.metadata.message_id for m in response.messages]


def test_long_poll_returns_at_once_when_an_active_run_ends(state: LinkState, loop: Loop) -> None:
    fleet = servicer(state, loop)
    node_id = state.create_node(5.0)
    run_id = new_run(state)
    waiting = loop.submit(
        fleet.PullMessages(pull(node_id, 20, active_run_ids=[run_id]), AsyncContext(node_id))
    )
    time.sleep(0.2)
    assert not waiting.done()
    state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.COMPLETED)
    reply = waiting.result(5)  # not the 20 s wait: the run's end woke the poll
    assert list(reply.finished_run_ids) == [run_id]
    assert list(reply.messages) == []


def test_finished_and_unknown_runs_are_reported_without_waiting(
    state: LinkState, loop: Loop
) -> None:
    fleet = servicer(state, loop)
    node_id = state.create_node(5.0)
    done = new_run(state)
    state.update_run_status(done, RunStatus.FINISHED, SubStatus.STOPPED, "stopped by user")
    alive = new_run(state)
    request = pull(node_id, 20, active_run_ids=[done, alive, 424242])
    reply = loop.submit(fleet.PullMessages(request, AsyncContext(node_id))).result(5)
    assert sorted(reply.finished_run_ids) == sorted([done, 424242])


def test_a_stored_instruction_ends_the_wait(state: LinkState, loop: Loop) -> None:
    fleet = servicer(state, loop)
    node_id = state.create_node(5.0)
    run_id = new_run(state)
    waiting = loop.submit(fleet.PullMessages(pull(node_id, 20), AsyncContext(node_id)))
    time.sleep(0.2)
    msg = instruction(state, run_id, node_id)
    state.store_instructions([msg])  # from this thread: the state's listener wakes the loop
    assert ids(waiting.result(5)) == [msg.message_id]


def test_a_change_while_looking_is_not_missed(state: LinkState, loop: Loop) -> None:
    fleet = servicer(state, loop)
    node_id = state.create_node(5.0)
    run_id = new_run(state)
    msg = instruction(state, run_id, node_id)
    look = fleet._quick_look
    looks = []

    def look_then_store(*args: Any) -> Any:
        found = look(*args)  # nothing yet ...
        if not looks:
            state.store_instructions([msg])  # ... and the instruction comes before the wait
        looks.append(found)
        return found

    fleet._quick_look = look_then_store  # type: ignore[method-assign]
    reply = loop.submit(fleet.PullMessages(pull(node_id, 20), AsyncContext(node_id))).result(5)
    assert ids(reply) == [msg.message_id]
    assert looks == [([], []), None]  # then the node had something: a look at the state


def test_a_node_without_instructions_is_answered_without_a_query(
    state: LinkState, loop: Loop
) -> None:
    fleet = servicer(state, loop)
    node_id = state.create_node(5.0)
    run_id = new_run(state)
    queried: list[object] = []
    look = fleet._pull_now
    fleet._pull_now = lambda *args: queried.append(args) or look(*args)  # type: ignore[method-assign]
    reply = loop.run(
        fleet.PullMessages(pull(node_id, active_run_ids=[run_id]), AsyncContext(node_id))
    )
    assert list(reply.messages) == [] and list(reply.finished_run_ids) == []
    assert queried == []  # no thread, no query
    msg = instruction(state, run_id, node_id)
    state.store_instructions([msg])
    reply = loop.run(fleet.PullMessages(pull(node_id), AsyncContext(node_id)))
    assert ids(reply) == [msg.message_id] and len(queried) == 1


def test_an_answer_that_never_arrived_loses_nothing(state: LinkState, loop: Loop) -> None:
    fleet = servicer(state, loop)
    node_id = state.create_node(5.0)
    run_id = new_run(state)
    msg = instruction(state, run_id, node_id)
    state.store_instructions([msg])
    assert ids(loop.run(fleet.PullMessages(pull(node_id), AsyncContext(node_id)))) == [
        msg.message_id
    ]
    # That answer was lost: the next pull, which acknowledges nothing, gets it again.
    again = loop.run(fleet.PullMessages(pull(node_id), AsyncContext(node_id)))
    assert ids(again) == [msg.message_id]
    acked = pull(node_id, ack_message_ids=[msg.message_id])
    assert ids(loop.run(fleet.PullMessages(acked, AsyncContext(node_id)))) == []


def test_a_cancelled_poll_consumes_nothing(state: LinkState, loop: Loop) -> None:
    fleet = servicer(state, loop)
    node_id = state.create_node(5.0)
    run_id = new_run(state)
    waiting = loop.submit(fleet.PullMessages(pull(node_id, 20), AsyncContext(node_id)))
    time.sleep(0.2)
    waiting.cancel()  # the caller went away (deadline passed, connection cut)
    msg = instruction(state, run_id, node_id)
    state.store_instructions([msg])
    reply = loop.run(fleet.PullMessages(pull(node_id), AsyncContext(node_id)))
    assert ids(reply) == [msg.message_id]


def test_too_many_acknowledgements_are_refused(state: LinkState, loop: Loop) -> None:
    fleet = servicer(state, loop)
    node_id = state.create_node(5.0)
    request = pull(node_id, ack_message_ids=[str(i) for i in range(MAX_ACKS + 1)])
    with pytest.raises(AssertionError, match="INVALID_ARGUMENT"):
        loop.run(fleet.PullMessages(request, AsyncContext(node_id)))


def test_waiting_polls_hold_no_thread_and_heartbeats_go_on(state: LinkState, loop: Loop) -> None:
    fleet = servicer(state, loop)
    nodes = [state.create_node(5.0) for _ in range(300)]
    threads_before = threading.active_count()
    waiting = [
        loop.submit(fleet.PullMessages(pull(node_id, 20), AsyncContext(node_id)))
        for node_id in nodes
    ]
    try:
        deadline = time.monotonic() + 10
        while fleet._wakeups.waiting < len(nodes) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fleet._wakeups.waiting == len(nodes)  # all 300 wait at once ...
        assert threading.active_count() < threads_before + 20  # ... on no thread of their own
        beat = fpb.HeartbeatRequest(node_id=nodes[0], heartbeat_interval=5)
        assert fleet.Heartbeat(beat, Context(nodes[0])).success
    finally:
        state.wake_all()
        for future in waiting:
            future.result(10)


def test_long_polls_beyond_their_slots_are_refused(state: LinkState, loop: Loop) -> None:
    slots = WaitSlots(1)
    fleet = servicer(state, loop, wait_slots=slots)
    node_id = state.create_node(5.0)
    first = loop.submit(fleet.PullMessages(pull(node_id, 20), AsyncContext(node_id)))
    try:
        deadline = time.monotonic() + 10
        while slots.busy == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # until the first poll holds the one slot
        with pytest.raises(AssertionError, match=r"RESOURCE_EXHAUSTED.*too many long polls"):
            loop.run(fleet.PullMessages(pull(node_id, 20), AsyncContext(node_id)))
        # A poll that does not wait needs no slot.
        assert ids(loop.run(fleet.PullMessages(pull(node_id), AsyncContext(node_id)))) == []
    finally:
        state.wake_all()
        first.result(10)


def test_a_poll_that_times_out_unchanged_looks_once(state: LinkState, loop: Loop) -> None:
    fleet = servicer(state, loop)
    node_id = state.create_node(5.0)
    looks: list[object] = []
    quick, query = fleet._quick_look, fleet._pull_now
    fleet._quick_look = lambda *args: looks.append("quick") or quick(*args)  # type: ignore[method-assign]
    fleet._pull_now = lambda *args: looks.append("query") or query(*args)  # type: ignore[method-assign]
    reply = loop.run(fleet.PullMessages(pull(node_id, 0.2), AsyncContext(node_id)))
    assert list(reply.messages) == []
    assert looks == ["quick"]  # thousands of polls ending together cost no second look each
