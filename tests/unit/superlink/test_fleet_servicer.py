"""Fleet servicer behaviour that the SuperNode relies on, against a real state."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from corolla.common.guard import Caller, Credential
from corolla.proto.v1 import fleet_pb2 as fpb
from corolla.superlink.fleet import FleetServicer
from corolla.superlink.state import LinkState, RunStatus, SubStatus

pytestmark = pytest.mark.timeout(30)


class Context:
    """Stands in for the guarded call context: only used when a call fails."""

    def __init__(self, node_id: int) -> None:
        self.caller = Caller(Credential.NODE, node_id=node_id)

    def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"aborted: {code} {details}")


def new_run(state: LinkState) -> int:
    return state.create_run(
        fab_id="p/a", fab_version="1", fab_hash="f" * 64, override_config={}, run_config={}
    )


def test_long_poll_returns_at_once_when_an_active_run_ends(state: LinkState) -> None:
    fleet = FleetServicer(state)
    node_id = state.create_node(5.0)
    run_id = new_run(state)
    request = fpb.FleetPullMessagesRequest(
        node_id=node_id, wait_seconds=20, active_run_ids=[run_id]
    )
    timer = threading.Timer(
        0.3,
        lambda: state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.COMPLETED),
    )
    started = time.monotonic()
    timer.start()
    reply = fleet.PullMessages(request, Context(node_id))
    elapsed = time.monotonic() - started
    timer.join()
    assert list(reply.finished_run_ids) == [run_id]
    assert list(reply.messages) == []
    assert elapsed < 5  # not the 20 s wait: the run's end woke the poll


def test_finished_and_unknown_runs_are_reported_without_waiting(state: LinkState) -> None:
    fleet = FleetServicer(state)
    node_id = state.create_node(5.0)
    done = new_run(state)
    state.update_run_status(done, RunStatus.FINISHED, SubStatus.STOPPED, "stopped by user")
    alive = new_run(state)
    request = fpb.FleetPullMessagesRequest(
        node_id=node_id, wait_seconds=20, active_run_ids=[done, alive, 424242]
    )
    started = time.monotonic()
    reply = fleet.PullMessages(request, Context(node_id))
    assert time.monotonic() - started < 2
    assert sorted(reply.finished_run_ids) == sorted([done, 424242])


def test_long_polls_beyond_their_slots_are_refused_and_unary_calls_go_on(
    state: LinkState,
) -> None:
    from corolla.common.grpc import WaitSlots

    slots = WaitSlots(1)
    fleet = FleetServicer(state, wait_slots=slots)
    node_id = state.create_node(5.0)
    first = fpb.FleetPullMessagesRequest(node_id=node_id, wait_seconds=20)
    waiting = threading.Thread(target=fleet.PullMessages, args=(first, Context(node_id)))
    waiting.start()
    try:
        deadline = time.monotonic() + 10
        while slots.busy == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # until the first poll holds the one slot
        second = fpb.FleetPullMessagesRequest(node_id=node_id, wait_seconds=20)
        with pytest.raises(AssertionError, match=r"RESOURCE_EXHAUSTED.*too many long polls"):
            fleet.PullMessages(second, Context(node_id))
        # A poll that does not wait, and a heartbeat, need no slot.
        quick = fpb.FleetPullMessagesRequest(node_id=node_id, wait_seconds=0)
        assert list(fleet.PullMessages(quick, Context(node_id)).messages) == []
        beat = fpb.HeartbeatRequest(node_id=node_id, heartbeat_interval=5)
        assert fleet.Heartbeat(beat, Context(node_id)).success
    finally:
        state.wake_all()
        waiting.join(10)
