"""Server optimizer state (momentum, moments) goes into checkpoints: a resumed run goes on
exactly as if it had not been interrupted."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from corolla.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.serverapp.strategy.fedadagrad import FedAdagrad
from corolla.serverapp.strategy.fedadam import FedAdam
from corolla.serverapp.strategy.fedavg import FedAvg
from corolla.serverapp.strategy.fedavgm import FedAvgM
from corolla.serverapp.strategy.fedyogi import FedYogi
from corolla.simulation import InProcessGrid

pytestmark = pytest.mark.timeout(60)

TRUE_W = np.array([2.0, -3.0, 0.5])


def make_app() -> ClientApp:
    """Deterministic linear regression: node i has 20 + 10 i examples, takes 3 GD steps."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        w = msg.content["arrays"].to_numpy_ndarrays()[0].copy()
        x = np.random.default_rng(context.node_id).normal(size=(20 + 10 * context.node_id, 3))
        for _ in range(3):
            w -= 0.05 * 2 * x.T @ (x @ w - x @ TRUE_W) / len(x)
        metrics = MetricRecord({"num-examples": len(x)})
        return Message(RecordDict({"arrays": ArrayRecord([w]), "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"m": MetricRecord({"num-examples": 1})}), reply_to=msg)

    return app


class CrashingGrid(InProcessGrid):
    """The ServerApp "dies" right after checkpointing round 2."""

    def save_checkpoint(self, server_round: int, checkpoint: RecordDict) -> None:
        super().save_checkpoint(server_round, checkpoint)
        if server_round == 2:
            raise KeyboardInterrupt("ServerApp process killed")


FACTORIES: dict[str, Callable[[], FedAvg]] = {
    "FedAvgM": lambda: FedAvgM(server_learning_rate=0.7, server_momentum=0.9),
    "FedAdam": lambda: FedAdam(eta=0.3),
    "FedAdagrad": lambda: FedAdagrad(eta=0.3),
    "FedYogi": lambda: FedYogi(eta=0.3),
}


def run(strategy: FedAvg, grid: InProcessGrid) -> ArrayRecord:
    return strategy.start(grid, ArrayRecord([np.zeros(3)]), 4, 5).arrays


@pytest.mark.parametrize("name", list(FACTORIES))
def test_a_resumed_run_continues_exactly(name: str) -> None:
    make = FACTORIES[name]
    uninterrupted = run(make(), InProcessGrid(make_app(), num_nodes=2))

    crashed = CrashingGrid(make_app(), num_nodes=2)
    with pytest.raises(KeyboardInterrupt):
        run(make(), crashed)
    saved = crashed.saved_checkpoint
    assert saved is not None
    assert any(key.startswith("state.") for key in saved[1])

    resumed = run(make(), InProcessGrid(make_app(), num_nodes=2, checkpoint=saved))
    # Equal up to rounding: the mean folds replies in arrival order, which follows the
    # sampled node order (the sampling RNG is not part of the checkpoint).
    np.testing.assert_allclose(
        resumed.to_numpy_ndarrays()[0], uninterrupted.to_numpy_ndarrays()[0], rtol=1e-12
    )

    # Without the state the same resume lands elsewhere: the test above can fail.
    forgetful = make()
    forgetful.restore_checkpoint_state = lambda state: None  # type: ignore[method-assign]
    other = run(forgetful, InProcessGrid(make_app(), num_nodes=2, checkpoint=saved))
    assert not np.allclose(
        other.to_numpy_ndarrays()[0], uninterrupted.to_numpy_ndarrays()[0], rtol=1e-12, atol=0
    )


def test_the_checkpoint_holds_the_moments_under_their_names() -> None:
    grid = InProcessGrid(make_app(), num_nodes=2)
    strategy = FedAdam()
    run(strategy, grid)
    saved = grid.saved_checkpoint
    assert saved is not None
    records = saved[1]
    assert strategy.m_t is not None and strategy.v_t is not None
    np.testing.assert_array_equal(records["state.m_t"]["0"].numpy(), strategy.m_t["0"])
    np.testing.assert_array_equal(records["state.v_t"]["0"].numpy(), strategy.v_t["0"])
    assert not any(key.startswith("state.") for key in FedAvg().checkpoint_state())
