"""`SimulationGrid`: virtual nodes on a worker pool, per-node contexts, errors, TTLs, FedAvg."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import sim_apps

from corolla.app import ArrayRecord, ConfigRecord, Context, ErrorCode, Message, RecordDict
from corolla.common.errors import FailedPrecondition, InvalidArgument
from corolla.common.protocol import TTL_EXPIRED_REASON
from corolla.serverapp.strategy import FedAvg, Result
from corolla.simulation import InProcessGrid, SimulationGrid

pytestmark = pytest.mark.timeout(60)

NODES = 6


@pytest.fixture(scope="module")
def grid() -> Iterator[SimulationGrid]:
    """One grid for the tests that only read; each test uses its own node ids' replies."""
    with SimulationGrid(
        sim_apps.app,
        NODES,
        backend_config={"num-workers": 2},
        run_id=7,
        run_config={"lr": 0.5},
        node_configs={3: {"partition-id": 30, "extra": "x"}},
    ) as shared:
        yield shared


def message(node_id: int, message_type: str = "train", **config: object) -> Message:
    content = RecordDict({"config": ConfigRecord(dict(config))}) if config else RecordDict()
    return Message(content, dst_node_id=node_id, message_type=message_type)


def by_node(replies: list[Message]) -> dict[int, Message]:
    return {reply.metadata.src_node_id: reply for reply in replies}


def test_every_node_replies_through_the_wire_with_its_node_config(grid: SimulationGrid) -> None:
    assert grid.get_node_ids() == list(range(1, NODES + 1))
    arrays = ArrayRecord({"big": np.zeros(40_000, np.float32), "small": np.ones(3)})
    sent = [
        Message(RecordDict({"arrays": arrays}), dst_node_id=n, message_type="query")
        for n in grid.get_node_ids()
    ]
    ids = grid.push_messages(sent)
    replies = by_node(grid.send_and_receive([], timeout=1) + list(grid.receive(ids, timeout=20)))
    assert sorted(replies) == grid.get_node_ids()
    for node_id, reply in replies.items():
        assert reply.metadata.reply_to_message_id == ids[node_id - 1]
        assert reply.metadata.run_id == 7 and reply.metadata.dst_node_id == 0
        metrics = reply.content["metrics"]
        assert metrics["node-id"] == node_id
        expected_partition = 30 if node_id == 3 else node_id - 1
        assert metrics["partition-id"] == expected_partition
        assert metrics["num-partitions"] == NODES
        back = reply.content["arrays"]
        np.testing.assert_array_equal(back["big"].numpy(), np.full(40_000, node_id, np.float32))
        np.testing.assert_array_equal(back["small"].numpy(), np.ones(3) + node_id)
    context = grid.context(3)
    assert context.run_id == 7 and context.node_id == 3
    assert context.node_config == {"partition-id": 30, "num-partitions": NODES, "extra": "x"}
    assert context.run_config == {"lr": 0.5}
    assert grid.pull_messages(ids) == []  # each reply is returned once


def test_context_state_persists_across_rounds_for_every_node() -> None:
    with SimulationGrid(sim_apps.app, 5, backend_config={"num-workers": 2}) as grid:
        for server_round in range(1, 4):
            kinds = ["train", "evaluate", "query"]
            replies = grid.send_and_receive(
                [message(n, kinds[server_round - 1]) for n in grid.get_node_ids()], timeout=20
            )
            assert sorted(r.content["metrics"]["n"] for r in replies) == [server_round] * 5
        # Two messages to one node in one push are handled one after the other, in order.
        replies = grid.send_and_receive([message(2), message(2, sleep=0.0)], timeout=20)
        assert sorted(r.content["metrics"]["n"] for r in replies) == [4, 5]
        counts = {n: grid.context(n).state["counter"]["n"] for n in grid.get_node_ids()}
        assert counts == {1: 3, 2: 5, 3: 3, 4: 3, 5: 3}


def test_a_raising_clientapp_gives_the_error_reply_a_deployment_gives(
    grid: SimulationGrid,
) -> None:
    content = RecordDict({"config": ConfigRecord({"raise": True})})
    sent = Message(content, dst_node_id=2, message_type="train")
    (reply,) = grid.send_and_receive([sent], timeout=20)
    expected = sim_apps.app(sent, Context(run_id=7, node_id=2))  # as ClientApp.__call__ does
    assert reply.has_error() and expected.has_error()
    assert reply.error.code == expected.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert reply.error.reason == expected.error.reason
    assert reply.error.reason.endswith("ValueError: asked to fail on node 2")


def test_an_unknown_destination_is_refused_before_anything_is_sent(grid: SimulationGrid) -> None:
    with pytest.raises(InvalidArgument, match="unknown destination node 99"):
        grid.push_messages([message(1), message(99)])
    with pytest.raises(InvalidArgument, match="unknown destination node 0"):
        grid.push_messages([message(0)])


def test_a_message_whose_ttl_runs_out_gets_a_ttl_expired_reply(tmp_path: Path) -> None:
    offset = [0.0]

    def clock() -> float:
        return time.time() + offset[0]

    with SimulationGrid(sim_apps.app, 2, backend_config={"num-workers": 1}, clock=clock) as grid:
        assert grid.wait_ready(30)
        started = tmp_path / "started"
        slow = Message(
            RecordDict({"config": ConfigRecord({"sleep": 0.5, "pid-file": str(started)})}),
            dst_node_id=1,
            message_type="train",
            ttl=30,
        )
        behind = Message(RecordDict(), dst_node_id=1, message_type="train", ttl=30)
        ids = grid.push_messages([slow, behind])
        assert grid.pull_messages(ids) == []  # nothing done, nothing expired yet
        wait_for(started.exists)  # the first message is running, the second waits for it
        offset[0] = 60.0
        replies = by_id(grid.pull_messages(ids))
        assert sorted(replies) == sorted(ids)
        for reply in replies.values():
            assert reply.error.code == ErrorCode.TTL_EXPIRED
            assert reply.error.reason == TTL_EXPIRED_REASON
            assert reply.metadata.src_node_id == 1
        # The running call finishes and keeps its context; its late reply is dropped; the
        # message queued behind it never runs.
        wait_for(lambda: "counter" in grid.context(1).state)
        assert grid.context(1).state["counter"]["n"] == 1
        assert grid.pull_messages(ids) == []
        (reply,) = grid.send_and_receive([message(1)], timeout=20)
        assert reply.content["metrics"]["n"] == 2


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def by_id(replies: list[Message]) -> dict[str, Message]:
    return {reply.metadata.reply_to_message_id: reply for reply in replies}


def test_receive_stops_at_its_timeout(grid: SimulationGrid) -> None:
    ids = grid.push_messages([message(4, sleep=1.0)])
    started = time.monotonic()
    assert list(grid.receive(ids, timeout=0.2)) == []
    assert time.monotonic() - started < 0.9
    (reply,) = list(grid.receive(ids, timeout=20))
    assert reply.content["metrics"]["node-id"] == 4


def test_checkpoints_are_kept_through_the_wire_encoding(grid: SimulationGrid) -> None:
    saved = RecordDict({"arrays": ArrayRecord({"w": np.arange(30_000, dtype=np.float32)})})
    grid.save_checkpoint(2, saved)
    loaded = grid.saved_checkpoint
    assert loaded is not None and loaded[0] == 2
    assert loaded[1] == saved and loaded[1] is not saved
    assert grid.load_checkpoint() is None  # not resumed from by the process that saved it


def test_a_closed_grid_refuses_work_and_leaves_no_process() -> None:
    before = sim_apps.child_pids()
    grid = SimulationGrid(sim_apps.app, 3, backend_config={"num-workers": 2})
    store = grid._store.path
    pids = set(grid.worker_pids())
    assert len(pids) == 2 and pids <= sim_apps.child_pids()
    grid.close()
    grid.close()  # idempotent
    assert sim_apps.child_pids() - before == set()
    assert not store.exists()
    with pytest.raises(FailedPrecondition):
        grid.push_messages([message(1)])
    with pytest.raises(FailedPrecondition):
        grid.pull_messages(["x"])


def run_fedavg(grid: InProcessGrid | SimulationGrid) -> Result:
    strategy = FedAvg(fraction_train=0.5, fraction_evaluate=0.5, min_available_nodes=8)
    strategy.rng = random.Random(7)
    initial = ArrayRecord({"w": np.zeros((3, 4), np.float32), "b": np.zeros(5)})
    return strategy.start(grid=grid, initial_arrays=initial, num_rounds=3, timeout=30)


def test_fedavg_on_the_simulation_equals_fedavg_in_process() -> None:
    expected = run_fedavg(InProcessGrid(sim_apps.fedavg_app, 8))
    with SimulationGrid(sim_apps.fedavg_app, 8, backend_config={"num-workers": 2}) as grid:
        got = run_fedavg(grid)
    assert sorted(got.arrays) == sorted(expected.arrays) == ["b", "w"]
    for key in expected.arrays:
        # FedAvg folds replies in arrival order into a mean kept in the model's dtype; the
        # workers answer in either order, so float32 results agree to a few units in the
        # last place (accumulated over 3 rounds), not bit for bit.
        np.testing.assert_allclose(
            got.arrays[key].numpy(), expected.arrays[key].numpy(), rtol=2e-6, atol=1e-7
        )
    assert not np.allclose(got.arrays["w"].numpy(), 0)
    for server_round in (1, 2, 3):
        for history in ("train_metrics_clientapp", "evaluate_metrics_clientapp"):
            want = getattr(expected, history)[server_round]
            have = getattr(got, history)[server_round]
            assert sorted(have) == sorted(want)
            for name in want:  # metrics of those arrays: equal up to the same rounding
                np.testing.assert_allclose(have[name], want[name], rtol=2e-6)
