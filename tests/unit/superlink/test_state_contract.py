"""The `LinkState` contract: every backend must pass this suite.

A new backend adds an entry to `BACKENDS` (and to `DURABLE_BACKENDS` if it survives a restart).
Time-dependent behaviour (heartbeats, TTLs, timestamps) runs on a `FakeClock`; only the long-poll
tests use real time, and they bound it tightly.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from postgres_server import database_for

from corolla.common.errors import (
    AlreadyExists,
    CorollaError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from corolla.superlink.state import (
    HEARTBEAT_PATIENCE,
    TRANSITIONS,
    AuditEvent,
    IllegalTransition,
    LinkState,
    RunStatus,
    SqliteLinkState,
    StoredMessage,
    SubStatus,
)
from corolla.superlink.state.base import StateLimits
from corolla.superlink.state.postgres import PostgresLinkState


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# name -> (directory for its files, clock) -> a fresh or reopened state
Factory = Callable[[Path, FakeClock], LinkState]
BACKENDS: dict[str, Factory] = {
    "sqlite-memory": lambda _dir, clock: SqliteLinkState(":memory:", clock=clock),
    "sqlite-file": lambda dir_, clock: SqliteLinkState(dir_ / "state.db", clock=clock),
    # A database of the session's PostgreSQL server, the same one for the same directory.
    "postgres": lambda dir_, clock: PostgresLinkState(
        database_for(dir_), dir_ / "objects", clock=clock
    ),
}
DURABLE_BACKENDS = ["sqlite-file", "postgres"]  # reopening on the same directory finds the data

INTERVAL = 10.0  # heartbeat interval used throughout
WAKE_BOUND = 0.5  # a waiter must wake this soon after the write it waits for


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=sorted(BACKENDS))
def state(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[LinkState]:
    link_state = BACKENDS[request.param](tmp_path, clock)
    yield link_state
    link_state.close()


# -- helpers ------------------------------------------------------------------------------------
def new_run(state: LinkState, **overrides: object) -> int:
    fields: dict[str, object] = {
        "fab_id": "acme/demo",
        "fab_version": "1.0.0",
        "fab_hash": "ab" * 32,
        "override_config": {"lr": 0.1},
        "run_config": {"lr": 0.1, "rounds": 3, "name": "x", "verbose": True},
    }
    fields.update(overrides)
    return state.create_run(**fields)  # type: ignore[arg-type]  # test helper, fields vary


def instruction(
    state: LinkState,
    run_id: int,
    dst: int,
    *,
    ttl: float = 60.0,
    object_ids: tuple[str, ...] = (),
    payload: bytes = b"payload",
) -> StoredMessage:
    return StoredMessage(
        message_id=uuid.uuid4().hex,
        run_id=run_id,
        src_node_id=0,
        dst_node_id=dst,
        reply_to_message_id="",
        message_type="train",
        created_at=state.clock(),
        ttl=ttl,
        payload=payload,
        object_ids=object_ids,
    )


def reply_to(state: LinkState, msg: StoredMessage, *, src: int | None = None) -> StoredMessage:
    return StoredMessage(
        message_id=uuid.uuid4().hex,
        run_id=msg.run_id,
        src_node_id=msg.dst_node_id if src is None else src,
        dst_node_id=0,
        reply_to_message_id=msg.message_id,
        message_type=msg.message_type,
        created_at=state.clock(),
        ttl=msg.ttl,
        payload=b"reply to " + msg.message_id.encode(),
    )


def take(state: LinkState, node_id: int, limit: int = 10) -> list[StoredMessage]:
    """Pull and acknowledge, as a node does."""
    pulled = state.pull_instructions(node_id, limit=limit)
    state.ack_instructions(node_id, [msg.message_id for msg in pulled])
    return pulled


def delivered(state: LinkState, run_id: int, node_id: int) -> StoredMessage:
    """An instruction stored and pulled (and acknowledged) by ``node_id``, ready to be
    answered."""
    msg = instruction(state, run_id, node_id)
    state.store_instructions([msg])
    assert take(state, node_id) == [msg]
    return msg


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    """Run ``target`` in a thread; the dict gets ``result``/``error`` and ``elapsed``."""
    out: dict[str, object] = {}

    def run() -> None:
        start = time.monotonic()
        try:
            out["result"] = target()
        except Exception as exc:
            out["error"] = exc
        out["done_at"] = time.monotonic()
        out["elapsed"] = out["done_at"] - start  # type: ignore[operator]  # both floats

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def finish(thread: threading.Thread, out: dict[str, object]) -> dict[str, object]:
    thread.join(timeout=10)
    assert not thread.is_alive(), "waiter did not return"
    return out


# -- runs ---------------------------------------------------------------------------------------
def test_create_run_is_pending_with_fields_and_timestamp(
    state: LinkState, clock: FakeClock
) -> None:
    run_id = new_run(state, federation="fed", owner="alice")
    run = state.get_run(run_id)
    assert 0 < run.run_id < 2**63
    assert (run.fab_id, run.fab_version, run.fab_hash) == ("acme/demo", "1.0.0", "ab" * 32)
    assert run.override_config == {"lr": 0.1}
    assert run.run_config == {"lr": 0.1, "rounds": 3, "name": "x", "verbose": True}
    assert type(run.run_config["rounds"]) is int and type(run.run_config["verbose"]) is bool
    assert (run.federation, run.owner) == ("fed", "alice")
    assert (run.status, run.sub_status, run.details) == (RunStatus.PENDING, "", "")
    assert run.pending_at == clock.now
    assert run.starting_at == run.running_at == run.finished_at == 0.0


def test_run_ids_are_random_distinct_and_listed_oldest_first(
    state: LinkState, clock: FakeClock
) -> None:
    ids = []
    for _ in range(12):
        ids.append(new_run(state))
        clock.advance(1)
    assert len(set(ids)) == len(ids)
    assert all(0 < run_id < 2**63 for run_id in ids)
    assert ids != sorted(ids)  # random, not sequential (fails with chance 1/12!)
    assert [run.run_id for run in state.list_runs()] == ids


def test_a_run_keeps_its_federation_options(state: LinkState) -> None:
    options = {"options.num-supernodes": 4, "options.backend.client-resources.num-cpus": 0.5}
    run_id = new_run(state, federation_options=options)
    assert state.get_run(run_id).federation_options == options
    assert type(state.get_run(run_id).federation_options["options.num-supernodes"]) is int
    assert state.get_run(new_run(state)).federation_options == {}
    with pytest.raises(InvalidArgument):
        new_run(state, federation_options={"options": {"num-supernodes": 4}})


def test_invalid_run_config_is_refused(state: LinkState) -> None:
    with pytest.raises(InvalidArgument):
        new_run(state, run_config={"nested": {"a": 1}})
    with pytest.raises(InvalidArgument):
        new_run(state, override_config={1: "x"})
    assert state.list_runs() == []


def test_run_lifecycle_sets_timestamps(state: LinkState, clock: FakeClock) -> None:
    run_id = new_run(state)
    t0 = clock.now
    clock.advance(1)
    starting = state.update_run_status(run_id, RunStatus.STARTING)
    assert (starting.status, starting.starting_at) == (RunStatus.STARTING, t0 + 1)
    clock.advance(1)
    running = state.update_run_status(run_id, RunStatus.RUNNING)
    assert (running.status, running.running_at) == (RunStatus.RUNNING, t0 + 2)
    clock.advance(1)
    done = state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.COMPLETED, "all good")
    assert (done.status, done.sub_status, done.details) == ("finished", "completed", "all good")
    assert (done.pending_at, done.starting_at, done.running_at, done.finished_at) == (
        t0,
        t0 + 1,
        t0 + 2,
        t0 + 3,
    )
    assert state.get_run(run_id) == done


def test_a_run_cannot_skip_starting(state: LinkState) -> None:
    run_id = new_run(state)
    with pytest.raises(IllegalTransition):
        state.update_run_status(run_id, RunStatus.RUNNING)
    assert state.get_run(run_id).status == RunStatus.PENDING


@pytest.mark.parametrize("start", [RunStatus.STARTING, RunStatus.RUNNING])
def test_a_run_may_be_requeued(state: LinkState, clock: FakeClock, start: str) -> None:
    run_id = new_run(state)
    for status in [RunStatus.STARTING, RunStatus.RUNNING][: 1 if start == "starting" else 2]:
        state.update_run_status(run_id, status)
    token = state.create_token(run_id)
    run = state.update_run_status(run_id, RunStatus.PENDING, details="resuming from round 2")
    assert (run.status, run.details, run.starting_at, run.running_at) == (
        RunStatus.PENDING,
        "resuming from round 2",
        0.0,
        0.0,
    )
    with pytest.raises(Unauthenticated):  # the lost process's token is void
        state.run_id_for_token(token)
    assert state.update_run_status(run_id, RunStatus.STARTING).status == RunStatus.STARTING


def test_expected_status_guards_a_race(state: LinkState) -> None:
    run_id = new_run(state)
    state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.STOPPED, "by alice")
    with pytest.raises(IllegalTransition, match="stopped"):
        state.update_run_status(run_id, RunStatus.STARTING, expected=RunStatus.PENDING)
    other = new_run(state)
    state.update_run_status(other, RunStatus.STARTING)
    with pytest.raises(IllegalTransition):
        state.update_run_status(other, RunStatus.RUNNING, expected=RunStatus.PENDING)
    assert state.get_run(other).status == RunStatus.STARTING


def test_every_transition_follows_the_table(state: LinkState) -> None:
    def at(status: str) -> int:
        run_id = new_run(state)
        path = {
            RunStatus.PENDING: [],
            RunStatus.STARTING: [RunStatus.STARTING],
            RunStatus.RUNNING: [RunStatus.STARTING, RunStatus.RUNNING],
        }[status]
        for step in path:
            state.update_run_status(run_id, step)
        return run_id

    for source in (RunStatus.PENDING, RunStatus.STARTING, RunStatus.RUNNING):
        for target in (RunStatus.PENDING, RunStatus.STARTING, RunStatus.RUNNING):
            run_id = at(source)
            if target in TRANSITIONS[source]:
                assert state.update_run_status(run_id, target).status == target
            else:
                with pytest.raises(IllegalTransition):
                    state.update_run_status(run_id, target)


def test_token_dies_with_its_run(state: LinkState) -> None:
    run_id = new_run(state)
    token = state.create_token(run_id)
    state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.COMPLETED)
    with pytest.raises(Unauthenticated):
        state.run_id_for_token(token)


def test_active_runs_leave_out_finished_ones(state: LinkState) -> None:
    done, pending, running = new_run(state), new_run(state), new_run(state)
    state.update_run_status(done, RunStatus.FINISHED, SubStatus.COMPLETED)
    state.update_run_status(running, RunStatus.STARTING)
    assert [run.run_id for run in state.active_runs()] == [pending, running]


def test_checkpoint_round_trip(state: LinkState) -> None:
    run_id = new_run(state)
    assert state.get_checkpoint(run_id) is None
    state.set_checkpoint(run_id, 1, b"one", [])
    state.set_checkpoint(run_id, 2, b"two", [])
    assert state.get_checkpoint(run_id) == (2, b"two")
    with pytest.raises(FailedPrecondition):  # objects first
        state.set_checkpoint(run_id, 3, b"three", ["not-stored"])
    with pytest.raises(InvalidArgument):
        state.set_checkpoint(run_id, 0, b"zero", [])
    with pytest.raises(NotFound):
        state.get_checkpoint(run_id + 1)


@pytest.mark.parametrize("start", [RunStatus.PENDING, RunStatus.STARTING, RunStatus.RUNNING])
def test_any_unfinished_run_may_finish(state: LinkState, start: str) -> None:
    run_id = new_run(state)
    for status in [RunStatus.STARTING, RunStatus.RUNNING]:
        if state.get_run(run_id).status == start:
            break
        state.update_run_status(run_id, status)
    run = state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.STOPPED, "by alice")
    assert (run.status, run.sub_status, run.details) == ("finished", "stopped", "by alice")
    assert run.finished_at > 0


def test_illegal_transitions_are_refused(state: LinkState) -> None:
    run_id = new_run(state)
    with pytest.raises(FailedPrecondition):
        state.update_run_status(run_id, RunStatus.PENDING)
    state.update_run_status(run_id, RunStatus.STARTING)
    state.update_run_status(run_id, RunStatus.RUNNING)
    for backwards in [RunStatus.STARTING, RunStatus.RUNNING]:
        with pytest.raises(FailedPrecondition):
            state.update_run_status(run_id, backwards)
    state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.FAILED, "boom")
    with pytest.raises(FailedPrecondition):
        state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.COMPLETED)
    assert state.get_run(run_id).sub_status == SubStatus.FAILED


def test_invalid_status_arguments(state: LinkState) -> None:
    run_id = new_run(state)
    with pytest.raises(InvalidArgument):
        state.update_run_status(run_id, "exploded")
    with pytest.raises(InvalidArgument):
        state.update_run_status(run_id, RunStatus.FINISHED)  # no sub_status
    with pytest.raises(InvalidArgument):
        state.update_run_status(run_id, RunStatus.FINISHED, "meh")
    with pytest.raises(InvalidArgument):
        state.update_run_status(run_id, RunStatus.STARTING, SubStatus.COMPLETED)
    assert state.get_run(run_id).status == RunStatus.PENDING


UNKNOWN_RUN_CALLS: dict[str, Callable[[LinkState, int], object]] = {
    "get_run": lambda s, r: s.get_run(r),
    "update_run_status": lambda s, r: s.update_run_status(r, RunStatus.STARTING),
    "wait_for_status_change": lambda s, r: s.wait_for_status_change(r, "pending", 0.0),
    "pull_replies": lambda s, r: s.pull_replies(r, ["x"]),
    "lost_instructions": lambda s, r: s.lost_instructions(r, ["x"]),
    "store_object": lambda s, r: s.store_object(r, "obj", b"x"),
    "delete_run_objects": lambda s, r: s.delete_run_objects(r),
    "set_context": lambda s, r: s.set_context(r, b"ctx"),
    "get_context": lambda s, r: s.get_context(r),
    "append_logs": lambda s, r: s.append_logs(r, ["line"]),
    "get_logs": lambda s, r: s.get_logs(r),
    "create_token": lambda s, r: s.create_token(r),
}


@pytest.mark.parametrize("call", sorted(UNKNOWN_RUN_CALLS))
def test_unknown_run_is_not_found(state: LinkState, call: str) -> None:
    with pytest.raises(NotFound):
        UNKNOWN_RUN_CALLS[call](state, 12345)


UNKNOWN_NODE_CALLS: dict[str, Callable[[LinkState, int], object]] = {
    "delete_node": lambda s, n: s.delete_node(n),
    "heartbeat": lambda s, n: s.heartbeat(n, INTERVAL),
    "pull_instructions": lambda s, n: s.pull_instructions(n, limit=1),
    "store_replies": lambda s, n: s.store_replies(
        n, [StoredMessage("r", 1, n, 0, "i", "train", s.clock(), 60.0, b"")]
    ),
}


@pytest.mark.parametrize("call", sorted(UNKNOWN_NODE_CALLS))
def test_unknown_node_is_not_found(state: LinkState, call: str) -> None:
    with pytest.raises(NotFound):
        UNKNOWN_NODE_CALLS[call](state, 777)


def test_annotate_run_sets_details_but_not_status(state: LinkState) -> None:
    run_id = new_run(state)
    run = state.annotate_run(run_id, "waiting for an app process")
    assert (run.status, run.details) == (RunStatus.PENDING, "waiting for an app process")
    assert state.get_run(run_id).details == "waiting for an app process"
    state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.FAILED, "gave up")
    with pytest.raises(FailedPrecondition):
        state.annotate_run(run_id, "too late")
    assert state.get_run(run_id).details == "gave up"
    with pytest.raises(NotFound):
        state.annotate_run(12345, "x")


def test_wait_for_status_change(state: LinkState) -> None:
    run_id = new_run(state)
    assert state.wait_for_status_change(run_id, "starting", 5.0).status == RunStatus.PENDING

    start = time.monotonic()
    unchanged = state.wait_for_status_change(run_id, RunStatus.PENDING, 0.2)
    assert unchanged.status == RunStatus.PENDING
    assert 0.18 <= time.monotonic() - start < 2.0

    thread, out = in_thread(lambda: state.wait_for_status_change(run_id, RunStatus.PENDING, 10))
    time.sleep(0.1)
    written_at = time.monotonic()
    state.update_run_status(run_id, RunStatus.STARTING)
    finish(thread, out)
    assert out["result"].status == RunStatus.STARTING  # type: ignore[attr-defined]
    assert out["done_at"] - written_at < WAKE_BOUND  # type: ignore[operator]


# -- FABs ---------------------------------------------------------------------------------------
def test_fab_store_is_idempotent(state: LinkState) -> None:
    state.store_fab("h1", b"zip bytes")
    state.store_fab("h1", b"zip bytes")
    assert state.get_fab("h1") == b"zip bytes"
    with pytest.raises(NotFound):
        state.get_fab("h2")


# -- nodes --------------------------------------------------------------------------------------
def test_nodes_register_and_list_online(state: LinkState) -> None:
    ids = [state.create_node(INTERVAL) for _ in range(5)]
    assert len(set(ids)) == 5 and all(0 < node_id < 2**63 for node_id in ids)
    assert state.online_node_ids() == sorted(ids)


def test_heartbeat_expiry_follows_the_clock(state: LinkState, clock: FakeClock) -> None:
    node_id = state.create_node(INTERVAL)
    patience = INTERVAL * HEARTBEAT_PATIENCE
    clock.advance(patience - 1)
    assert state.online_node_ids() == [node_id]
    assert state.is_online(node_id)
    clock.advance(2)
    assert state.online_node_ids() == []
    assert not state.is_online(node_id)
    state.heartbeat(node_id, INTERVAL)
    assert state.online_node_ids() == [node_id]
    assert state.is_online(node_id)
    assert not state.is_online(node_id + 1)  # never registered
    state.heartbeat(node_id, 100.0)  # a longer interval extends patience
    clock.advance(100.0 * HEARTBEAT_PATIENCE - 1)
    assert state.online_node_ids() == [node_id]


def test_node_reregisters_with_its_id(state: LinkState, clock: FakeClock) -> None:
    node_id = state.create_node(INTERVAL)
    clock.advance(INTERVAL * HEARTBEAT_PATIENCE * 2)
    assert state.online_node_ids() == []
    assert state.create_node(INTERVAL, requested_node_id=node_id) == node_id
    assert state.online_node_ids() == [node_id]
    assert state.create_node(INTERVAL, requested_node_id=424242) == 424242  # e.g. after a wipe
    assert state.online_node_ids() == sorted([node_id, 424242])


def test_delete_node(state: LinkState) -> None:
    keep, gone = state.create_node(INTERVAL), state.create_node(INTERVAL)
    state.delete_node(gone)
    assert state.online_node_ids() == [keep]
    with pytest.raises(NotFound):
        state.delete_node(gone)
    with pytest.raises(NotFound):
        state.heartbeat(gone, INTERVAL)


@pytest.mark.parametrize("interval", [0.0, -1.0, float("inf"), float("nan")])
def test_invalid_heartbeat_interval(state: LinkState, interval: float) -> None:
    with pytest.raises(InvalidArgument):
        state.create_node(interval)
    node_id = state.create_node(INTERVAL)
    with pytest.raises(InvalidArgument):
        state.heartbeat(node_id, interval)


def test_node_keys_bind_a_node_id(state: LinkState, clock: FakeClock) -> None:
    key, other_key = b"\x30\x59 public key", b"\x30\x59 another"
    node_id = state.register_node_key(key, "fp-1")
    assert 0 < node_id < 2**63
    assert state.node_key("fp-1") == (node_id, key)
    with pytest.raises(AlreadyExists):
        state.register_node_key(key, "fp-1")
    with pytest.raises(NotFound):
        state.node_key("fp-2")
    keyless = state.create_node(INTERVAL)
    assert state.create_node(INTERVAL, requested_node_id=node_id) == node_id  # it connects
    second = state.register_node_key(other_key, "fp-2")
    clock.advance(1)
    state.heartbeat(node_id, INTERVAL)
    nodes = {node.node_id: node for node in state.list_nodes()}
    assert [n.node_id for n in state.list_nodes()] == sorted([node_id, keyless, second])
    assert (nodes[node_id].fingerprint, nodes[node_id].online) == ("fp-1", True)
    assert nodes[node_id].last_seen == clock.now
    assert (nodes[second].online, nodes[second].last_seen) == (False, 0.0)  # never connected
    assert (nodes[keyless].fingerprint, nodes[keyless].online) == ("", True)
    state.unregister_node(node_id)
    with pytest.raises(NotFound):
        state.node_key("fp-1")
    assert node_id not in state.online_node_ids()
    with pytest.raises(NotFound):
        state.unregister_node(node_id)


def test_a_node_reads_only_what_its_instructions_name(state: LinkState) -> None:
    run_id, other_run = new_run(state), new_run(state)
    node, other = state.create_node(INTERVAL), state.create_node(INTERVAL)
    for name in ("model", "extra", "foreign"):
        state.store_object(run_id, name, name.encode())
    assert not state.node_serves_run(node, run_id)
    state.store_instructions([with_objects(instruction(state, run_id, node), "model")])
    state.store_instructions([with_objects(instruction(state, run_id, other), "foreign")])
    assert state.node_serves_run(node, run_id) and not state.node_serves_run(node, other_run)
    wanted = ["model", "extra", "foreign", "unknown"]
    assert state.node_object_ids(node, run_id, wanted) == {"model"}
    assert state.node_object_ids(node, other_run, wanted) == set()
    assert state.run_object_ids(run_id, wanted) == {"model", "extra", "foreign"}


# -- instructions -------------------------------------------------------------------------------
def test_instructions_round_trip_in_order_and_once(state: LinkState, clock: FakeClock) -> None:
    run_id = new_run(state)
    node, other = state.create_node(INTERVAL), state.create_node(INTERVAL)
    sent = []
    for i in range(3):
        state.store_object(run_id, f"o{i}", bytes([i]))
        sent.append(instruction(state, run_id, node, object_ids=(f"o{i}",), payload=bytes([i])))
        clock.advance(1)
    state.store_instructions([sent[2], sent[0], sent[1]])
    state.store_instructions([instruction(state, run_id, other)])
    assert take(state, node) == sent  # oldest first, all fields intact
    assert state.pull_instructions(node, limit=10) == []  # acknowledged: returned once
    assert len(state.pull_instructions(other, limit=10)) == 1


def test_an_instruction_comes_again_until_acknowledged_or_answered(state: LinkState) -> None:
    run_id = new_run(state)
    node, other = state.create_node(INTERVAL), state.create_node(INTERVAL)
    first, second = instruction(state, run_id, node), instruction(state, run_id, node)
    state.store_instructions([first, second])
    assert state.pull_instructions(node, limit=10) == [first, second]
    # The answer never reached the node: nothing was consumed.
    assert state.pull_instructions(node, limit=10) == [first, second]
    state.ack_instructions(other, [first.message_id])  # not its instruction: ignored
    state.ack_instructions(node, ["unknown", second.message_id])
    assert state.pull_instructions(node, limit=10) == [first]
    state.store_replies(node, [reply_to(state, first)])  # a reply acknowledges too
    assert state.pull_instructions(node, limit=10) == []
    state.ack_instructions(node, [first.message_id, second.message_id])  # late, twice: no-op
    assert state.pull_instructions(node, limit=10) == []


def test_take_instructions_is_many_pulls_with_their_acknowledgements_at_once(
    state: LinkState,
) -> None:
    run_id = new_run(state)
    node, other, idle = (state.create_node(INTERVAL) for _ in range(3))
    first, second = instruction(state, run_id, node), instruction(state, run_id, node)
    theirs = instruction(state, run_id, other)
    state.store_instructions([first, second, theirs])
    taken = state.take_instructions({node: [], other: [], idle: [], 424242: []}, limit=10)
    assert taken == {node: [first, second], other: [theirs], idle: []}  # unknown: left out
    # Nothing consumed; an acknowledgement (of this node's instructions only) is.
    again = state.take_instructions({node: [second.message_id], other: [first.message_id]}, 10)
    assert again == {node: [first], other: [theirs]}
    assert state.pull_instructions(node, limit=10) == [first]
    assert state.take_instructions({node: []}, limit=1) == {node: [first]}
    with pytest.raises(InvalidArgument):
        state.take_instructions({node: []}, limit=0)


def test_heartbeat_nowait_is_a_heartbeat_or_nothing(state: LinkState, clock: FakeClock) -> None:
    node_id = state.create_node(INTERVAL)
    clock.advance(INTERVAL * HEARTBEAT_PATIENCE + 1)
    assert not state.is_online(node_id)
    if not state.heartbeat_nowait(node_id, INTERVAL):  # it could not: nothing done
        assert not state.is_online(node_id)
        state.heartbeat(node_id, INTERVAL)
    assert state.is_online(node_id)
    assert state.online_node_ids() == [node_id]
    state.write_heartbeats()  # what it took, written (or nothing to write)
    assert [node.online for node in state.list_nodes()] == [True]
    # Never taken: refused as `heartbeat` refuses it, or left to `heartbeat`.
    for node, interval, error in ((node_id, 0.0, InvalidArgument), (node_id + 1, 5.0, NotFound)):
        try:
            taken = state.heartbeat_nowait(node, interval)
        except error:
            taken = False
        assert not taken


def test_may_have_instructions_is_false_only_when_a_pull_gets_nothing(state: LinkState) -> None:
    run_id = new_run(state)
    node, idle = state.create_node(INTERVAL), state.create_node(INTERVAL)
    msg = instruction(state, run_id, node)
    state.store_instructions([msg])
    assert state.may_have_instructions(node)
    for node_id in (node, idle):  # whatever a backend answers, it is never a wrong "no"
        if not state.may_have_instructions(node_id):
            assert state.pull_instructions(node_id, limit=10) == []
    take(state, node)
    state.pull_instructions(node, limit=10)  # finds nothing left
    if not state.may_have_instructions(node):
        assert state.pull_instructions(node, limit=10) == []
    state.store_instructions([again := instruction(state, run_id, node)])
    assert state.may_have_instructions(node)
    assert state.pull_instructions(node, limit=10) == [again]


def test_ended_runs_when_known_are_the_finished_and_unknown_ones(state: LinkState) -> None:
    live, done = new_run(state), new_run(state)
    state.update_run_status(done, RunStatus.FINISHED, SubStatus.STOPPED)
    ended = state.ended_runs([live, done, 4242])
    assert ended is None or sorted(ended) == sorted([done, 4242])


def test_an_acknowledgement_before_delivery_is_ignored(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    msg = instruction(state, run_id, node)
    state.store_instructions([msg])
    state.ack_instructions(node, [msg.message_id])  # the node cannot have it yet
    assert state.pull_instructions(node, limit=10) == [msg]


def test_pull_respects_limit(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    state.store_instructions([instruction(state, run_id, node) for _ in range(5)])
    sizes = [len(take(state, node, limit=2)) for _ in range(4)]
    assert sizes == [2, 2, 1, 0]
    with pytest.raises(InvalidArgument):
        state.pull_instructions(node, limit=0)


def test_instructions_to_unknown_node_refused_atomically(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    batch = [instruction(state, run_id, node), instruction(state, run_id, 999)]
    with pytest.raises(InvalidArgument):
        state.store_instructions(batch)
    assert state.pull_instructions(node, limit=10) == []
    state.store_instructions(batch[:1])  # nothing of the failed batch was kept
    assert state.pull_instructions(node, limit=10) == batch[:1]


def test_instructions_to_deleted_node_refused(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    state.delete_node(node)
    with pytest.raises(InvalidArgument):
        state.store_instructions([instruction(state, run_id, node)])


def test_instruction_validation(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    good = instruction(state, run_id, node)
    with pytest.raises(NotFound):
        state.store_instructions([instruction(state, 4242, node)])
    for bad in [
        StoredMessage(**{**good.__dict__, "message_id": ""}),
        StoredMessage(**{**good.__dict__, "reply_to_message_id": "abc"}),
        StoredMessage(**{**good.__dict__, "ttl": 0.0}),
    ]:
        with pytest.raises(InvalidArgument):
            state.store_instructions([good, bad])
    assert state.pull_instructions(node, limit=10) == []


def test_duplicate_message_ids_refused(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    msg = instruction(state, run_id, node)
    with pytest.raises(AlreadyExists):
        state.store_instructions([msg, msg])
    state.store_instructions([msg])
    fresh = instruction(state, run_id, node)
    state.store_instructions([fresh, msg])  # msg again (a retried push) is not stored twice
    assert state.pull_instructions(node, limit=10) == [msg, fresh]


def test_expired_instructions_are_skipped(state: LinkState, clock: FakeClock) -> None:
    run_id = new_run(state)
    node = state.create_node(1000.0)
    short = instruction(state, run_id, node, ttl=10)
    long = instruction(state, run_id, node, ttl=100)
    state.store_instructions([short, long])
    clock.advance(11)
    assert state.pull_instructions(node, limit=10) == [long]
    assert state.lost_instructions(run_id, [short.message_id]) == [short]  # still reported


def test_finished_run_gets_no_new_instructions(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    pending = instruction(state, run_id, node)
    state.store_instructions([pending])
    state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.STOPPED)
    assert state.pull_instructions(node, limit=10) == []
    with pytest.raises(FailedPrecondition):
        state.store_instructions([instruction(state, run_id, node)])


# -- replies ------------------------------------------------------------------------------------
def test_reply_round_trip_consumes(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    msg = delivered(state, run_id, node)
    reply = reply_to(state, msg)
    state.store_replies(node, [reply])
    assert state.pull_replies(run_id, ["unrelated"]) == []
    assert state.pull_replies(run_id, [msg.message_id]) == [reply]
    assert state.pull_replies(run_id, [msg.message_id]) == [reply]  # again until acknowledged
    state.ack_replies(run_id, [reply.message_id])
    assert state.pull_replies(run_id, [msg.message_id]) == []
    with pytest.raises(NotFound):  # the instruction went with its reply
        state.store_replies(node, [reply_to(state, msg)])
    assert state.lost_instructions(run_id, [msg.message_id]) == []


def test_pull_replies_returns_only_requested(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    first, second = delivered(state, run_id, node), delivered(state, run_id, node)
    replies = [reply_to(state, first), reply_to(state, second)]
    state.store_replies(node, replies)
    assert state.pull_replies(run_id, [second.message_id]) == [replies[1]]
    state.ack_replies(run_id, [replies[1].message_id])
    assert state.pull_replies(run_id, [first.message_id, second.message_id]) == [replies[0]]


def test_a_retried_instruction_push_stores_once(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    msg = instruction(state, run_id, node)
    state.store_instructions([msg])
    state.store_instructions([msg])  # the first call's answer was lost: same id, same content
    assert take(state, node) == [msg]
    assert state.pull_instructions(node, limit=10) == []
    with pytest.raises(AlreadyExists):
        state.store_instructions([replace(msg, payload=b"other")])


def test_reply_to_unknown_or_undelivered_instruction_refused(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    undelivered = instruction(state, run_id, node)
    state.store_instructions([undelivered])
    with pytest.raises(InvalidArgument):
        state.store_replies(node, [reply_to(state, undelivered)])
    ghost = instruction(state, run_id, node)  # never stored
    with pytest.raises(NotFound):
        state.store_replies(node, [reply_to(state, ghost)])


def test_reply_from_wrong_node_refused(state: LinkState) -> None:
    run_id = new_run(state)
    node, intruder = state.create_node(INTERVAL), state.create_node(INTERVAL)
    msg = delivered(state, run_id, node)
    with pytest.raises(InvalidArgument):
        state.store_replies(intruder, [reply_to(state, msg, src=intruder)])
    with pytest.raises(InvalidArgument):  # src_node_id must be the replying node
        state.store_replies(node, [reply_to(state, msg, src=intruder)])
    state.store_replies(node, [reply_to(state, msg)])


def test_second_reply_and_duplicate_ids_refused_atomically(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    first, second = delivered(state, run_id, node), delivered(state, run_id, node)
    reply = reply_to(state, first)
    state.store_replies(node, [reply])
    with pytest.raises(AlreadyExists):  # its id for another message
        state.store_replies(node, [replace(reply_to(state, second), message_id=reply.message_id)])
    with pytest.raises(InvalidArgument):  # a second answer to the same instruction
        state.store_replies(node, [reply_to(state, second), reply_to(state, first)])
    with pytest.raises(InvalidArgument):
        state.store_replies(node, [reply_to(state, second), reply_to(state, second)])
    assert state.pull_replies(run_id, [first.message_id, second.message_id]) == [reply]


def test_a_retried_reply_push_is_stored_once(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    msg = delivered(state, run_id, node)
    reply = reply_to(state, msg)
    state.store_replies(node, [reply])
    state.store_replies(node, [reply])  # the first call's answer was lost
    assert state.pull_replies(run_id, [msg.message_id]) == [reply]
    state.ack_replies(run_id, [reply.message_id])
    state.store_replies(node, [reply])  # lost again, retried after the ServerApp took it
    assert state.pull_replies(run_id, [msg.message_id]) == []
    with pytest.raises(NotFound):  # another answer to it is no retry
        state.store_replies(node, [reply_to(state, msg)])


def test_reply_for_another_run_refused(state: LinkState) -> None:
    run_id, other_run = new_run(state), new_run(state)
    node = state.create_node(INTERVAL)
    msg = delivered(state, run_id, node)
    wrong = StoredMessage(**{**reply_to(state, msg).__dict__, "run_id": other_run})
    with pytest.raises(InvalidArgument):
        state.store_replies(node, [wrong])


# -- lost instructions --------------------------------------------------------------------------
def test_instructions_to_an_offline_node_are_lost_once(state: LinkState, clock: FakeClock) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    pending = instruction(state, run_id, node, ttl=3600)
    taken = delivered(state, run_id, node)
    state.store_instructions([pending])
    ids = [pending.message_id, taken.message_id]
    assert state.lost_instructions(run_id, ids) == []  # node online, TTL fine
    clock.advance(INTERVAL * HEARTBEAT_PATIENCE + 1)
    assert sorted(m.message_id for m in state.lost_instructions(run_id, ids)) == sorted(ids)
    assert state.lost_instructions(run_id, ids) == []


def test_instructions_past_ttl_are_lost(state: LinkState, clock: FakeClock) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    msg = instruction(state, run_id, node, ttl=5)
    state.store_instructions([msg])
    state.pull_instructions(node, limit=1)
    clock.advance(6)
    state.heartbeat(node, INTERVAL)  # online, but the instruction is too old
    assert state.lost_instructions(run_id, [msg.message_id]) == [msg]


def test_answered_or_other_runs_instructions_are_not_lost(
    state: LinkState, clock: FakeClock
) -> None:
    run_id, other_run = new_run(state), new_run(state)
    node = state.create_node(INTERVAL)
    answered = delivered(state, run_id, node)
    state.store_replies(node, [reply_to(state, answered)])
    foreign = instruction(state, other_run, node)
    state.store_instructions([foreign])
    clock.advance(10_000)
    ids = [answered.message_id, foreign.message_id, "unknown"]
    assert state.lost_instructions(run_id, ids) == []
    assert state.pull_replies(run_id, [answered.message_id])[0].reply_to_message_id == (
        answered.message_id
    )


def test_instructions_to_a_deleted_node_are_lost(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    msg = delivered(state, run_id, node)
    state.delete_node(node)
    assert state.lost_instructions(run_id, [msg.message_id]) == [msg]


# -- long polls ---------------------------------------------------------------------------------
def test_pull_instructions_waits_for_a_store(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    thread, out = in_thread(lambda: state.pull_instructions(node, limit=10, wait=10))
    time.sleep(0.1)
    msg = instruction(state, run_id, node)
    written_at = time.monotonic()
    state.store_instructions([msg])
    finish(thread, out)
    assert out["result"] == [msg]
    assert out["done_at"] - written_at < WAKE_BOUND  # type: ignore[operator]


def test_listeners_hear_of_every_change_a_wait_waits_for(state: LinkState) -> None:
    heard: list[object] = []
    state.add_listener(heard.append)
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    msg = instruction(state, run_id, node)
    state.store_instructions([msg])
    assert ("node", node) in heard
    state.pull_instructions(node, limit=10)
    state.store_replies(node, [reply_to(state, msg)])
    assert ("replies", run_id) in heard
    state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.STOPPED)
    assert ("run", run_id) in heard
    heard.clear()
    state.wake_all()
    assert heard == ["all"]
    state.delete_node(node)
    assert heard[-1] == ("node", node)  # its long poll ends


def test_pull_replies_waits_for_a_store(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    msg = delivered(state, run_id, node)
    thread, out = in_thread(lambda: state.pull_replies(run_id, [msg.message_id], wait=10))
    time.sleep(0.1)
    reply = reply_to(state, msg)
    written_at = time.monotonic()
    state.store_replies(node, [reply])
    finish(thread, out)
    assert out["result"] == [reply]
    assert out["done_at"] - written_at < WAKE_BOUND  # type: ignore[operator]


def test_waits_return_empty_when_nothing_comes(state: LinkState) -> None:
    run_id = new_run(state)
    node, other = state.create_node(INTERVAL), state.create_node(INTERVAL)
    thread, out = in_thread(lambda: state.pull_instructions(node, limit=10, wait=0.3))
    state.store_instructions([instruction(state, run_id, other)])  # not for this waiter
    finish(thread, out)
    assert out["result"] == []
    assert 0.28 <= out["elapsed"] < 2.0  # type: ignore[operator]
    start = time.monotonic()
    assert state.pull_replies(run_id, ["nothing"], wait=0.2) == []
    assert 0.18 <= time.monotonic() - start < 2.0


def test_wake_all_ends_waits_early(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    waiters = [
        in_thread(lambda: state.pull_instructions(node, limit=1, wait=10)),
        in_thread(lambda: state.pull_replies(run_id, ["m"], wait=10)),
        in_thread(lambda: state.wait_for_status_change(run_id, RunStatus.PENDING, 10)),
    ]
    time.sleep(0.1)
    woken_at = time.monotonic()
    state.wake_all()
    for thread, out in waiters:
        finish(thread, out)
        assert "error" not in out
        assert out["done_at"] - woken_at < WAKE_BOUND  # type: ignore[operator]


def test_finishing_a_run_ends_its_reply_wait(state: LinkState) -> None:
    run_id = new_run(state)
    thread, out = in_thread(lambda: state.pull_replies(run_id, ["m"], wait=10))
    time.sleep(0.1)
    finished_at = time.monotonic()
    state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.STOPPED)
    finish(thread, out)
    assert out["result"] == []
    assert out["done_at"] - finished_at < WAKE_BOUND  # type: ignore[operator]


def test_close_wakes_waiters_and_refuses_calls(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    thread, out = in_thread(lambda: state.pull_instructions(node, limit=1, wait=10))
    time.sleep(0.1)
    closed_at = time.monotonic()
    state.close()
    finish(thread, out)
    assert isinstance(out["error"], Unavailable)
    assert out["done_at"] - closed_at < WAKE_BOUND  # type: ignore[operator]
    with pytest.raises(Unavailable):
        state.get_run(run_id)
    with pytest.raises(Unavailable):
        state.online_node_ids()
    state.close()  # idempotent


def test_invalid_wait_refused(state: LinkState) -> None:
    node = state.create_node(INTERVAL)
    with pytest.raises(InvalidArgument):
        state.pull_instructions(node, limit=1, wait=float("inf"))


# -- objects ------------------------------------------------------------------------------------
def test_large_object_reads_back_in_chunks(state: LinkState) -> None:
    run_id = new_run(state)
    data = os.urandom(5 * 1024 * 1024 + 123)
    state.store_object(run_id, "big", memoryview(data))
    assert state.object_size("big") == len(data)
    chunk_size = 1024 * 1024
    chunks = list(state.read_object("big", chunk_size))
    assert len(chunks) == 6
    assert all(len(chunk) == chunk_size for chunk in chunks[:-1])
    assert b"".join(chunks) == data


def test_object_store_is_idempotent(state: LinkState) -> None:
    run_id = new_run(state)
    state.store_object(run_id, "o", b"first")
    state.store_object(run_id, "o", b"ignored")
    assert b"".join(state.read_object("o", 2)) == b"first"
    state.store_object(run_id, "empty", b"")
    assert state.object_size("empty") == 0
    assert list(state.read_object("empty", 10)) == []


def test_unknown_object(state: LinkState) -> None:
    with pytest.raises(NotFound):
        state.object_size("nope")
    with pytest.raises(NotFound):  # raised by the call, not on first iteration
        state.read_object("nope", 10)


def test_missing_objects(state: LinkState) -> None:
    run_id = new_run(state)
    state.store_object(run_id, "a", b"1")
    state.store_object(run_id, "c", b"3")
    assert state.missing_objects(["a", "b", "c", "d"]) == ["b", "d"]
    assert state.missing_objects([]) == []


def test_delete_run_objects(state: LinkState) -> None:
    run_a, run_b = new_run(state), new_run(state)
    state.store_object(run_a, "a1", b"1")
    state.store_object(run_a, "a2", b"2")
    state.store_object(run_b, "b1", b"3")
    assert state.delete_run_objects(run_a) == 2
    assert state.missing_objects(["a1", "a2", "b1"]) == ["a1", "a2"]
    assert state.delete_run_objects(run_a) == 0


def test_objects_shared_with_another_run_survive(state: LinkState) -> None:
    run_a, run_b, run_c = new_run(state), new_run(state), new_run(state)
    node = state.create_node(INTERVAL)
    state.store_object(run_a, "shared", b"weights")
    state.store_object(run_b, "shared", b"weights")  # no-op for the data, but b uses it too
    state.store_object(run_a, "referenced", b"w2")
    state.store_instructions([instruction(state, run_c, node, object_ids=("referenced",))])
    assert state.delete_run_objects(run_a) == 0
    assert state.missing_objects(["shared", "referenced"]) == []
    assert state.delete_run_objects(run_b) == 1
    assert state.delete_run_objects(run_c) == 1
    assert state.missing_objects(["shared", "referenced"]) == ["shared", "referenced"]


def with_objects(msg: StoredMessage, *object_ids: str) -> StoredMessage:
    return replace(msg, object_ids=object_ids)


def test_acknowledged_rounds_give_their_objects_back(state: LinkState) -> None:
    """A long run keeps the objects of the messages still in flight, not of every round."""
    run_id, other_run = new_run(state), new_run(state)
    node = state.create_node(INTERVAL)
    state.store_object(run_id, "model-1", b"m1")
    state.store_object(run_id, "shared", b"s")
    state.store_object(other_run, "shared", b"s")
    train = with_objects(instruction(state, run_id, node), "model-1", "shared")
    state.store_instructions([train])
    state.pull_instructions(node, limit=10)
    state.store_object(run_id, "update", b"u")
    state.store_replies(node, [with_objects(reply_to(state, train), "update")])
    state.store_object(run_id, "model-2", b"m2")
    evaluate = with_objects(instruction(state, run_id, node), "model-2")
    state.store_instructions([evaluate])  # pushed before the train replies are acknowledged
    state.ack_replies(run_id, [state.pull_replies(run_id, [train.message_id])[0].message_id])
    assert state.missing_objects(["model-1", "update", "model-2", "shared"]) == [
        "model-1",
        "update",
    ]
    assert state.run_object_ids(run_id, ["shared", "model-2"]) == {"model-2"}
    assert state.run_object_ids(other_run, ["shared"]) == {"shared"}  # the other run's still
    next_train = with_objects(instruction(state, run_id, node), "model-2")
    state.store_instructions([next_train])  # the same model again: kept for it
    state.pull_instructions(node, limit=10)
    state.store_replies(node, [reply_to(state, evaluate)])
    state.ack_replies(run_id, [state.pull_replies(run_id, [evaluate.message_id])[0].message_id])
    assert state.missing_objects(["model-2"]) == []
    state.store_replies(node, [reply_to(state, next_train)])
    state.ack_replies(run_id, [state.pull_replies(run_id, [next_train.message_id])[0].message_id])
    assert state.missing_objects(["model-2"]) == ["model-2"]


def test_lost_instructions_give_their_objects_back(state: LinkState, clock: FakeClock) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    state.store_object(run_id, "model", b"m")
    msg = with_objects(instruction(state, run_id, node, ttl=5.0), "model")
    state.store_instructions([msg])
    clock.advance(10)
    assert state.lost_instructions(run_id, [msg.message_id]) == [msg]
    assert state.missing_objects(["model"]) == ["model"]


def test_a_message_cannot_reference_an_object_not_stored(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    with pytest.raises(FailedPrecondition, match="not stored: gone"):
        state.store_instructions([with_objects(instruction(state, run_id, node), "gone")])
    assert state.pull_instructions(node, limit=10) == []


def test_a_checkpoint_keeps_its_objects_until_replaced(state: LinkState) -> None:
    run_id = new_run(state)
    for name in ("round-1", "round-2"):
        state.store_object(run_id, name, name.encode())
    state.set_checkpoint(run_id, 1, b"one", ["round-1"])
    state.set_checkpoint(run_id, 2, b"two", ["round-2"])
    assert state.missing_objects(["round-1", "round-2"]) == ["round-1"]  # no message uses it
    state.set_checkpoint(run_id, 3, b"three", ["round-2"])
    assert state.missing_objects(["round-2"]) == []


def test_an_object_streamed_in_pieces_is_readable_once_committed(state: LinkState) -> None:
    run_id, data = new_run(state), os.urandom(5000)
    sink = state.open_object(run_id, "streamed", len(data))
    for start in range(0, len(data), 1024):
        sink.write(memoryview(data)[start : start + 1024])
    assert state.missing_objects(["streamed"]) == ["streamed"]
    sink.commit()
    assert b"".join(state.read_object("streamed", 999)) == data
    dropped = state.open_object(run_id, "dropped", 10)
    dropped.write(memoryview(b"12345"))
    dropped.discard()
    dropped.discard()  # idempotent
    assert state.missing_objects(["dropped"]) == ["dropped"]
    with pytest.raises(InvalidArgument):
        state.open_object(run_id, "", 1)
    short = state.open_object(run_id, "short", 10)
    with pytest.raises(InvalidArgument):
        short.commit()  # 0 of 10 bytes
    short.discard()
    with pytest.raises(NotFound):
        state.open_object(12345, "o", 1)


def test_finishing_a_run_collects_its_objects(state: LinkState) -> None:
    run_a, run_b = new_run(state), new_run(state)
    state.store_object(run_a, "own", b"1")
    state.store_object(run_a, "shared", b"2")
    state.store_object(run_b, "shared", b"2")
    state.update_run_status(run_a, RunStatus.FINISHED, SubStatus.STOPPED)
    assert state.missing_objects(["own", "shared"]) == ["own"]
    with pytest.raises(FailedPrecondition):
        state.store_object(run_a, "late", b"3")
    with pytest.raises(FailedPrecondition):
        state.open_object(run_a, "late", 1)


def test_logs_come_in_batches_of_at_most_max_bytes(state: LinkState) -> None:
    run_id = new_run(state)
    state.append_logs(run_id, [f"{i:02d}" * 20 for i in range(10)])  # 40 bytes each
    first, after = state.get_logs(run_id, 0, max_bytes=100)
    assert (len(first), after) == (2, 2)
    rest, after = state.get_logs(run_id, after, max_bytes=10)  # one line at least
    assert (len(rest), after) == (1, 3)
    assert state.get_logs(run_id, 3)[0] == [f"{i:02d}" * 20 for i in range(3, 10)]


# -- contexts, logs, tokens ---------------------------------------------------------------------
def test_context(state: LinkState) -> None:
    run_id = new_run(state)
    assert state.get_context(run_id) is None
    state.set_context(run_id, b"ctx-1")
    state.set_context(run_id, b"ctx-2")
    assert state.get_context(run_id) == b"ctx-2"


def test_logs_page_with_after(state: LinkState) -> None:
    run_id, other = new_run(state), new_run(state)
    assert state.get_logs(run_id) == ([], 0)
    state.append_logs(run_id, ["a", "b", "c"])
    state.append_logs(other, ["x"])
    state.append_logs(run_id, ["d", "e"])
    state.append_logs(run_id, [])
    assert state.get_logs(run_id) == (["a", "b", "c", "d", "e"], 5)
    assert state.get_logs(run_id, after=3) == (["d", "e"], 5)
    assert state.get_logs(run_id, after=5) == ([], 5)
    assert state.get_logs(other) == (["x"], 1)
    with pytest.raises(InvalidArgument):
        state.get_logs(run_id, after=-1)


def test_tokens(state: LinkState) -> None:
    run_a, run_b = new_run(state), new_run(state)
    token_a, token_b = state.create_token(run_a), state.create_token(run_b)
    assert token_a != token_b and len(token_a) >= 43
    assert token_a.replace("-", "").replace("_", "").isalnum()
    assert state.run_id_for_token(token_a) == run_a
    assert state.run_id_for_token(token_b) == run_b
    for bad in ["", "not-a-token", token_a + "x"]:
        with pytest.raises(Unauthenticated):
            state.run_id_for_token(bad)


# -- restart ------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", DURABLE_BACKENDS)
def test_everything_survives_a_restart(backend: str, tmp_path: Path, clock: FakeClock) -> None:
    before = BACKENDS[backend](tmp_path, clock)
    run_id = new_run(before)
    before.update_run_status(run_id, RunStatus.STARTING)
    node = before.create_node(INTERVAL)
    answered = delivered(before, run_id, node)
    reply = reply_to(before, answered)
    before.store_replies(node, [reply])
    taken = delivered(before, run_id, node)
    waiting = instruction(before, run_id, node)
    before.store_instructions([waiting])
    before.append_logs(run_id, ["one", "two"])
    before.set_context(run_id, b"ctx")
    before.store_fab("h", b"fab")
    before.store_object(run_id, "o", b"obj")
    token = before.create_token(run_id)
    run = before.get_run(run_id)
    before.close()

    after = BACKENDS[backend](tmp_path, clock)
    try:
        assert after.list_runs() == [run]
        assert after.online_node_ids() == [node]
        assert after.pull_instructions(node, limit=10) == [waiting]  # `taken` stays delivered
        assert after.pull_replies(run_id, [answered.message_id]) == [reply]
        after.store_replies(node, [reply_to(after, taken)])
        assert after.get_logs(run_id) == (["one", "two"], 2)
        assert after.get_context(run_id) == b"ctx"
        assert after.get_fab("h") == b"fab"
        assert b"".join(after.read_object("o", 2)) == b"obj"
        assert after.run_id_for_token(token) == run_id
        assert after.update_run_status(run_id, RunStatus.RUNNING).status == RunStatus.RUNNING
    finally:
        after.close()


# -- concurrency --------------------------------------------------------------------------------
def test_concurrent_store_and_pull_lose_nothing(state: LinkState) -> None:
    threads_n, per_thread = 8, 200
    run_id = new_run(state)
    nodes = [state.create_node(INTERVAL) for _ in range(threads_n)]
    sent: list[list[str]] = [[] for _ in nodes]
    received: list[list[str]] = [[] for _ in nodes]
    errors: list[BaseException] = []

    def produce(i: int) -> None:
        try:
            for _ in range(per_thread):
                msg = instruction(state, run_id, nodes[i])
                state.store_instructions([msg])
                sent[i].append(msg.message_id)
        except BaseException as exc:
            errors.append(exc)

    def consume(i: int) -> None:
        try:
            deadline = time.monotonic() + 30
            while len(received[i]) < per_thread and time.monotonic() < deadline:
                for msg in state.pull_instructions(nodes[i], limit=50, wait=1.0):
                    state.store_replies(nodes[i], [reply_to(state, msg)])
                    received[i].append(msg.message_id)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=produce, args=(i,)) for i in range(threads_n)]
    workers += [threading.Thread(target=consume, args=(i,)) for i in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors
    assert not any(worker.is_alive() for worker in workers)
    for i in range(threads_n):
        assert received[i] == sent[i]  # all of them, once, in order
    all_ids = [message_id for ids in sent for message_id in ids]
    replies = state.pull_replies(run_id, all_ids)
    assert sorted(r.reply_to_message_id for r in replies) == sorted(all_ids)


def all_at_once(count: int, call: Callable[[int], object]) -> list[object]:
    """``call(i)`` in ``count`` threads released together; each one's result or exception."""
    barrier = threading.Barrier(count)
    outcomes: list[object] = [None] * count

    def run(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            outcomes[i] = call(i)
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


def test_concurrent_replies_to_one_instruction_store_one(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    msg = delivered(state, run_id, node)
    replies = [reply_to(state, msg) for _ in range(6)]
    outcomes = all_at_once(6, lambda i: state.store_replies(node, [replies[i]]))
    refused = [o for o in outcomes if isinstance(o, InvalidArgument)]
    assert (outcomes.count(None), len(refused)) == (1, 5), outcomes
    assert state.pull_replies(run_id, [msg.message_id]) == [replies[outcomes.index(None)]]


def test_a_reply_pushed_again_at_the_same_time_is_stored_once(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    msg = delivered(state, run_id, node)
    reply = reply_to(state, msg)
    assert all_at_once(6, lambda _: state.store_replies(node, [reply])) == [None] * 6
    assert state.pull_replies(run_id, [msg.message_id]) == [reply]


def test_concurrent_pulls_deliver_each_instruction(state: LinkState) -> None:
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    sent = [instruction(state, run_id, node) for _ in range(40)]
    state.store_instructions(sent)
    pulled = all_at_once(4, lambda _: state.pull_instructions(node, limit=40))
    assert all(got == sent for got in pulled)  # nothing consumed: each pull has them all
    state.store_replies(node, [reply_to(state, msg) for msg in sent])  # all delivered
    assert state.pull_instructions(node, limit=40) == []


def test_a_message_never_outlives_its_objects(state: LinkState) -> None:
    """A round's objects are collected when its replies are acknowledged, while the next
    round's instructions on the same model are being stored: every instruction a node gets
    has its objects there."""
    run_id = new_run(state)
    node = state.create_node(INTERVAL)
    rounds, errors, sent = 50, [], []
    replied: queue.Queue[str] = queue.Queue()

    def server() -> None:
        try:
            for _ in range(rounds):
                msg = with_objects(instruction(state, run_id, node), "model")
                try:
                    state.store_instructions([msg])
                except FailedPrecondition:  # collected meanwhile: push it again, as a grid does
                    state.store_object(run_id, "model", b"weights")
                    state.store_instructions([msg])
                sent.append(msg.message_id)
                replied.get(timeout=10)  # the next round starts as the reply is acknowledged
        except BaseException as exc:
            errors.append(exc)

    def node_side() -> None:
        try:
            answered = 0
            deadline = time.monotonic() + 30
            while answered < rounds and time.monotonic() < deadline:
                for msg in state.pull_instructions(node, limit=5, wait=0.5):
                    assert state.missing_objects(list(msg.object_ids)) == []
                    state.store_replies(node, [reply_to(state, msg)])
                    replied.put(msg.message_id)
                    answered += 1
            assert answered == rounds
        except BaseException as exc:
            errors.append(exc)

    def acknowledger() -> None:
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(t.is_alive() for t in workers[:2]):
                if replies := state.pull_replies(run_id, list(sent), wait=0.5):
                    state.ack_replies(run_id, [reply.message_id for reply in replies])
        except BaseException as exc:
            errors.append(exc)

    state.store_object(run_id, "model", b"weights")
    workers = [threading.Thread(target=fn) for fn in (server, node_side, acknowledger)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors, errors
    assert not any(worker.is_alive() for worker in workers)


# -- audit trail --------------------------------------------------------------------------------
def test_audit_events_are_listed_newest_first_and_filtered(state: LinkState) -> None:
    state.record_audit(AuditEvent(at=10.0, user="alice", action="StartRun", run_id=7))
    state.record_audit(
        AuditEvent(at=11.0, user="bob", action="StopRun", run_id=7, allowed=False, reason="no")
    )
    state.record_audit(AuditEvent(at=12.0, user="alice", action="ListRuns", peer="ipv4:x"))
    events = state.list_audit()
    assert [e.action for e in events] == ["ListRuns", "StopRun", "StartRun"]
    assert events[0].event_id > events[1].event_id > events[2].event_id > 0
    assert events[0].peer == "ipv4:x"
    denied = events[1]
    assert (denied.user, denied.run_id, denied.allowed, denied.reason) == ("bob", 7, False, "no")
    assert [e.action for e in state.list_audit(user="alice")] == ["ListRuns", "StartRun"]
    assert [e.user for e in state.list_audit(run_id=7)] == ["bob", "alice"]
    assert [e.at for e in state.list_audit(since=11.0)] == [12.0, 11.0]
    assert len(state.list_audit(limit=1)) == 1
    with pytest.raises(InvalidArgument):
        state.list_audit(limit=0)


def test_audit_trail_keeps_the_newest_events_within_its_cap(state: LinkState) -> None:
    state.limits = StateLimits(max_audit_events=5)
    for i in range(40):
        state.record_audit(AuditEvent(at=float(i), user="u", action="ListRuns"))
    events = state.list_audit(limit=1000)
    assert events[0].at == 39.0  # the newest is kept
    assert 5 <= len(events) <= 10  # trimmed in batches: never more than twice the cap
    assert [e.at for e in events] == sorted((e.at for e in events), reverse=True)


def test_store_replies_many_stores_each_push_on_its_own(state: LinkState) -> None:
    run_id = new_run(state)
    node, other = state.create_node(INTERVAL), state.create_node(INTERVAL)
    mine, theirs = instruction(state, run_id, node), instruction(state, run_id, other)
    state.store_instructions([mine, theirs])
    take(state, node)
    take(state, other)
    good, wrong_node = reply_to(state, mine), reply_to(state, theirs, src=node)
    outcomes = state.store_replies_many(
        [(node, [good]), (node, [wrong_node]), (424242, [reply_to(state, theirs, src=424242)])]
    )
    assert outcomes[0] is None
    assert isinstance(outcomes[1], CorollaError)  # answers another node's instruction
    assert isinstance(outcomes[2], NotFound)  # not registered
    assert [r.message_id for r in state.pull_replies(run_id, [mine.message_id])] == [
        good.message_id
    ]
    assert state.pull_replies(run_id, [theirs.message_id]) == []  # the refused one: nothing
    # A retried push is stored once (idempotent), also in a batch.
    assert state.store_replies_many([(node, [good]), (other, [reply_to(state, theirs)])]) == [
        None,
        None,
    ]
    assert len(state.pull_replies(run_id, [mine.message_id, theirs.message_id])) == 2
