"""FedProx: FedAvg's aggregation, with ``proximal-mu`` in every train config."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategy_cases import idle_grid, records, train_reply, train_round, values_of

from corolla.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.serverapp.strategy.fedavg import FedAvg
from corolla.serverapp.strategy.fedprox import FedProx
from corolla.simulation import InProcessGrid

pytestmark = pytest.mark.timeout(60)


def proximal_app() -> ClientApp:
    """One local gradient step on ``f(w) = (w - target)**2 / 2 + mu / 2 * (w - w_global)**2``
    (target = node id) from ``w = w_global``: the proximal term's gradient is 0 there, so the
    step is ``w - lr * (w - target)``; node i also reports the mu it was told."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        mu = msg.content["config"]["proximal-mu"]
        w = msg.content["arrays"].to_numpy_ndarrays()[0]
        stepped = w - 0.5 * (w - context.node_id)
        metrics = MetricRecord({"mu": mu, "num-examples": 1})
        return Message(
            RecordDict({"arrays": ArrayRecord([stepped]), "metrics": metrics}), reply_to=msg
        )

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        assert "proximal-mu" not in msg.content["config"]  # train configs only
        return Message(RecordDict({"m": MetricRecord({"num-examples": 1})}), reply_to=msg)

    return app


def test_train_configs_carry_proximal_mu_and_the_mean_is_fedavgs() -> None:
    config = ConfigRecord({"lr": 0.1})
    result = FedProx(proximal_mu=0.25).start(
        InProcessGrid(proximal_app(), num_nodes=2), ArrayRecord([np.zeros(2)]), 1, 5, config
    )
    assert result.train_metrics_clientapp[1]["mu"] == 0.25
    # Node i steps 0 -> 0.5 * i; the mean of 0.5 and 1.0 (equal weights) is 0.75.
    np.testing.assert_allclose(result.arrays.to_numpy_ndarrays()[0], [0.75, 0.75])
    assert config == {"lr": 0.1}  # the caller's config is not changed


def test_the_config_keeps_the_callers_keys_and_server_round() -> None:
    strategy = FedProx(proximal_mu=1.5)
    messages = list(
        strategy.configure_train(3, records({"w": [0.0]}), ConfigRecord({"a": 1}), idle_grid())
    )
    assert [m.content["config"] for m in messages] == [
        {"a": 1, "proximal-mu": 1.5, "server-round": 3}
    ] * 2


def test_aggregation_is_the_weighted_mean() -> None:
    replies = [train_reply(records({"w": [2.0]}), 1), train_reply(records({"w": [6.0]}), 3)]
    arrays, metrics = train_round(FedProx(proximal_mu=0.1), 1, records({"w": [0.0]}), replies)
    assert values_of(arrays).tolist() == [5.0]  # (1 * 2 + 3 * 6) / (1 + 3)
    assert metrics is not None and metrics["num-examples"] == 4


def test_mu_zero_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="corolla.serverapp.strategy"):
        FedProx()
    assert "proximal_mu=0.0" in caplog.text


@settings(max_examples=40, deadline=None)
@given(
    mu=st.floats(0.0, 100.0),
    values=st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=5),
    weights=st.lists(st.integers(1, 50), min_size=5, max_size=5),
)
def test_fedprox_aggregates_exactly_like_fedavg(
    mu: float, values: list[float], weights: list[int]
) -> None:
    replies = [
        train_reply(records({"w": [v, -v]}), n)
        for v, n in zip(values, weights[: len(values)], strict=True)
    ]
    sent = records({"w": [0.0, 0.0]})
    prox = train_round(FedProx(proximal_mu=mu), 1, sent, replies)
    plain = train_round(FedAvg(), 1, sent, replies)
    assert prox == plain
    messages = list(FedProx(proximal_mu=mu).configure_train(1, sent, ConfigRecord(), idle_grid()))
    assert all(m.content["config"]["proximal-mu"] == mu for m in messages)
