"""QFedAvg: q-fair averaging (Li et al., 2020), folded one reply at a time."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategy_cases import records, train_reply, train_round, values_of

from corolla.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.common.errors import InvalidArgument
from corolla.serverapp.strategy.qfedavg import QFedAvg
from corolla.simulation import InProcessGrid

pytestmark = pytest.mark.timeout(60)


def test_one_round_by_hand() -> None:
    # client_learning_rate 0.5 -> L = 2; q = 1; w = [1, 0].
    # A: w_A = [0, 0], F = 1: Delta = 2 * ([1, 0] - [0, 0]) = [2, 0], ||Delta||^2 = 4;
    #    delta = 1**1 * [2, 0] = [2, 0]; h = 1 * 1**0 * 4 + 2 * 1**1 = 6.
    # B: w_B = [1, 1], F = 3: Delta = [0, -2], ||Delta||^2 = 4; delta = 3 * [0, -2] = [0, -6];
    #    h = 1 * 3**0 * 4 + 2 * 3 = 10.
    # w - sum(delta) / sum(h) = [1, 0] - [2, -6] / 16 = [0.875, 0.375].
    replies = [
        train_reply(records({"w": [0.0, 0.0]}), 10, train_loss=1.0),
        train_reply(records({"w": [1.0, 1.0]}), 30, train_loss=3.0),
    ]
    arrays, metrics = train_round(QFedAvg(0.5, q=1.0), 1, records({"w": [1.0, 0.0]}), replies)
    np.testing.assert_allclose(values_of(arrays), [0.875, 0.375], rtol=1e-8)
    # Metrics are still weighted by num-examples: (10 * 1 + 30 * 3) / 40 = 2.5.
    assert metrics is not None and metrics["train_loss"] == pytest.approx(2.5)


def test_a_fractional_q_by_hand() -> None:
    # L = 1 (client lr 1), q = 0.5, w = [0], one reply w_1 = [-2], F = 4:
    # Delta = 1 * (0 - -2) = 2, ||Delta||^2 = 4; delta = 4**0.5 * 2 = 4;
    # h = 0.5 * 4**-0.5 * 4 + 1 * 4**0.5 = 1 + 2 = 3; w = 0 - 4 / 3.
    replies = [train_reply(records({"w": [-2.0]}), 1, train_loss=4.0)]
    arrays, _ = train_round(QFedAvg(1.0, q=0.5), 1, records({"w": [0.0]}), replies)
    assert values_of(arrays)[0] == pytest.approx(-4 / 3, rel=1e-9)


@settings(max_examples=50, deadline=None)
@given(
    local=st.lists(
        st.tuples(st.floats(-100, 100), st.floats(0, 50), st.integers(1, 100)),
        min_size=1,
        max_size=5,
    ),
    start=st.floats(-100, 100),
    lr=st.floats(0.01, 10),
)
def test_q_zero_is_the_unweighted_mean(
    local: list[tuple[float, float, int]], start: float, lr: float
) -> None:
    """q = 0: delta_k = L * (w - w_k) and h_k = L, so w - sum(delta) / sum(h) = mean(w_k),
    whatever the losses and example counts."""
    replies = [train_reply(records({"w": [w]}), n, train_loss=loss) for w, loss, n in local]
    arrays, _ = train_round(QFedAvg(lr, q=0.0), 1, records({"w": [start]}), replies)
    expected = sum(w for w, _, _ in local) / len(local)
    assert values_of(arrays)[0] == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_replies_without_a_training_loss_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        i = context.node_id
        metrics = {"num-examples": 1} | ({"train_loss": 1.0} if i != 2 else {})
        arrays = ArrayRecord([np.full(2, float(i))])
        return Message(RecordDict({"arrays": arrays, "m": MetricRecord(metrics)}), reply_to=msg)

    strategy = QFedAvg(1.0, q=0.0, fraction_evaluate=0.0)
    with caplog.at_level(logging.WARNING, logger="corolla.serverapp.strategy"):
        result = strategy.start(InProcessGrid(app, num_nodes=3), ArrayRecord([np.zeros(2)]), 1, 5)
    assert "node 2: invalid reply: no MetricRecord with 'train_loss'" in caplog.text
    np.testing.assert_allclose(result.arrays.to_numpy_ndarrays()[0], [2.0, 2.0])  # (1 + 3) / 2


def test_the_client_learning_rate_must_be_positive() -> None:
    with pytest.raises(InvalidArgument, match="client_learning_rate"):
        QFedAvg(0.0)
