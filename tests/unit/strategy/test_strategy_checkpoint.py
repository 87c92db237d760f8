"""Checkpoints: saved after each round; a restarted run resumes after the last finished round."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from corolla.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.records import ConfigRecord
from corolla.serverapp.strategy import FedAvg, Result
from corolla.simulation import InProcessGrid

pytestmark = pytest.mark.timeout(30)

TRUE_W = np.array([2.0, -3.0, 0.5])
NUM_ROUNDS = 3


def local_data(node_id: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(node_id)
    x = rng.normal(size=(20 + 10 * node_id, 3))
    return x, x @ TRUE_W


def make_app(seen_rounds: list[int]) -> ClientApp:
    """A deterministic linear-regression ClientApp; notes the round of each train message."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        seen_rounds.append(int(msg.content["config"]["server-round"]))
        w = msg.content["arrays"].to_numpy_ndarrays()[0].copy()
        x, y = local_data(context.node_id)
        for _ in range(5):
            w -= 0.05 * 2 * x.T @ (x @ w - y) / len(x)
        loss = float(np.mean((x @ w - y) ** 2))
        metrics = MetricRecord({"loss": loss, "num-examples": len(x)})
        return Message(RecordDict({"arrays": ArrayRecord([w]), "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        w = msg.content["arrays"].to_numpy_ndarrays()[0]
        x, y = local_data(context.node_id)
        metrics = MetricRecord({"mse": float(np.mean((x @ w - y) ** 2)), "num-examples": len(x)})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


def evaluate_fn(calls: list[int]):  # type: ignore[no-untyped-def]  # a closure for tests
    def fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        calls.append(server_round)
        return MetricRecord({"norm": float(np.linalg.norm(arrays.to_numpy_ndarrays()[0]))})

    return fn


def run(grid: InProcessGrid, calls: list[int], **kwargs: object) -> Result:
    strategy = FedAvg()
    strategy.rng.seed(7)
    return strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([np.zeros(3)]),
        num_rounds=NUM_ROUNDS,
        timeout=5,
        evaluate_fn=evaluate_fn(calls),
        **kwargs,  # type: ignore[arg-type]
    )


class CrashingGrid(InProcessGrid):
    """The ServerApp "dies" right after checkpointing round ``crash_after``."""

    crash_after = 2

    def save_checkpoint(self, server_round: int, checkpoint: RecordDict) -> None:
        super().save_checkpoint(server_round, checkpoint)
        if server_round == self.crash_after:
            raise KeyboardInterrupt("ServerApp process killed")


def test_a_restarted_run_resumes_after_the_last_finished_round(
    caplog: pytest.LogCaptureFixture,
) -> None:
    uninterrupted = run(InProcessGrid(make_app([]), num_nodes=2), [])

    crashed = CrashingGrid(make_app([]), num_nodes=2)
    with pytest.raises(KeyboardInterrupt):
        run(crashed, [])
    assert crashed.saved_checkpoint is not None and crashed.saved_checkpoint[0] == 2

    seen_rounds: list[int] = []
    calls: list[int] = []
    restarted = InProcessGrid(
        make_app(seen_rounds), num_nodes=2, checkpoint=crashed.saved_checkpoint
    )
    with caplog.at_level(logging.INFO, logger="corolla.serverapp.strategy"):
        resumed = run(restarted, calls)

    assert seen_rounds == [3, 3]  # only round 3 trained, on both nodes
    assert calls == [3]  # round 0's evaluate_fn is not run again: its metrics come back
    assert "resumed from round 2 of 3" in caplog.text
    np.testing.assert_array_equal(
        resumed.arrays.to_numpy_ndarrays()[0], uninterrupted.arrays.to_numpy_ndarrays()[0]
    )
    assert resumed.train_metrics_clientapp == uninterrupted.train_metrics_clientapp
    assert resumed.evaluate_metrics_clientapp == uninterrupted.evaluate_metrics_clientapp
    assert resumed.evaluate_metrics_serverapp == uninterrupted.evaluate_metrics_serverapp
    assert sorted(resumed.train_metrics_clientapp) == [1, 2, 3]
    assert sorted(resumed.evaluate_metrics_serverapp) == [0, 1, 2, 3]
    assert restarted.saved_checkpoint is not None and restarted.saved_checkpoint[0] == 3


def test_each_finished_round_is_checkpointed() -> None:
    saved: list[tuple[int, RecordDict]] = []

    class Recording(InProcessGrid):
        def save_checkpoint(self, server_round: int, checkpoint: RecordDict) -> None:
            saved.append((server_round, checkpoint))

    result = run(Recording(make_app([]), num_nodes=2), [])
    assert [r for r, _ in saved] == [1, 2, 3]
    last = saved[-1][1]
    assert last["arrays"] == result.arrays
    assert last["progress"] == ConfigRecord(
        {"server-round": 3, "num-rounds": 3, "strategy": "FedAvg"}
    )
    assert last["train-metrics-clientapp.3"] == result.train_metrics_clientapp[3]
    assert last["evaluate-metrics-serverapp.0"] == result.evaluate_metrics_serverapp[0]


def test_checkpointing_can_be_turned_off() -> None:
    crashed = CrashingGrid(make_app([]), num_nodes=2)
    with pytest.raises(KeyboardInterrupt):
        run(crashed, [])
    seen_rounds: list[int] = []
    grid = InProcessGrid(make_app(seen_rounds), num_nodes=2, checkpoint=crashed.saved_checkpoint)
    run(grid, [], checkpoint=False)
    assert seen_rounds == [1, 1, 2, 2, 3, 3]  # the checkpoint was not used
    assert grid.saved_checkpoint == crashed.saved_checkpoint  # and nothing new saved


def test_a_checkpoint_of_another_number_of_rounds_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = InProcessGrid(make_app([]), num_nodes=2)
    run(first, [])  # a 3-round checkpoint
    seen_rounds: list[int] = []
    grid = InProcessGrid(make_app(seen_rounds), num_nodes=2, checkpoint=first.saved_checkpoint)
    with caplog.at_level(logging.WARNING, logger="corolla.serverapp.strategy"):
        FedAvg().start(grid, ArrayRecord([np.zeros(3)]), 2, 5.0)  # Flower's positional form
    assert seen_rounds == [1, 1, 2, 2]
    assert "Ignoring the checkpoint of round 3" in caplog.text


def test_a_finished_run_restarted_returns_its_result_without_new_rounds() -> None:
    first = InProcessGrid(make_app([]), num_nodes=2)
    done = run(first, [])
    seen_rounds: list[int] = []
    grid = InProcessGrid(make_app(seen_rounds), num_nodes=2, checkpoint=first.saved_checkpoint)
    again = run(grid, [])
    assert seen_rounds == []
    assert again.arrays == done.arrays
    assert again.train_metrics_clientapp == done.train_metrics_clientapp


def test_a_second_start_in_the_same_serverapp_runs_its_own_rounds() -> None:
    """Two trainings in one ServerApp: the second is not "resumed" from the first's
    checkpoint (same strategy class, same number of rounds), as in Flower."""
    seen_rounds: list[int] = []
    grid = InProcessGrid(make_app(seen_rounds), num_nodes=2)
    first = run(grid, [])
    second = run(grid, [])
    assert seen_rounds == [1, 1, 2, 2, 3, 3] * 2  # each start ran its 3 rounds on both nodes
    assert sorted(second.train_metrics_clientapp) == [1, 2, 3]
    assert second.arrays == first.arrays  # same seed, same data: the same training again
