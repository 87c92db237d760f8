"""FedAvgM: FedAvg's mean applied as an SGD step with server momentum."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategy_cases import records, train_reply, train_round, values_of

from corolla.serverapp.strategy.fedavg import FedAvg
from corolla.serverapp.strategy.fedavgm import FedAvgM

pytestmark = pytest.mark.timeout(60)


def test_two_rounds_of_momentum_by_hand() -> None:
    strategy = FedAvgM(server_learning_rate=0.5, server_momentum=0.9)
    # Round 1: x = [1, 2], mean = [0, 1] -> g = x - mean = [1, 1]; v = g = [1, 1];
    # x = x - 0.5 * v = [0.5, 1.5].
    first, _ = train_round(
        strategy,
        1,
        records({"w": [1.0, 2.0]}),
        [train_reply(records({"w": [0.0, 0.0]})), train_reply(records({"w": [0.0, 2.0]}))],
    )
    np.testing.assert_allclose(values_of(first), [0.5, 1.5])
    # Round 2: x = [0.5, 1.5], mean = [0.5, 0.5] -> g = [0, 1];
    # v = 0.9 * [1, 1] + [0, 1] = [0.9, 1.9]; x = [0.5 - 0.45, 1.5 - 0.95] = [0.05, 0.55].
    assert first is not None
    second, _ = train_round(strategy, 2, first, [train_reply(records({"w": [0.5, 0.5]}))])
    np.testing.assert_allclose(values_of(second), [0.05, 0.55])
    assert strategy.momentum_vector is not None
    np.testing.assert_allclose(strategy.momentum_vector[0], [0.9, 1.9])
    assert strategy.current_arrays == second


def test_without_server_optimization_it_is_fedavg() -> None:
    strategy = FedAvgM()
    assert not strategy.server_opt
    replies = [train_reply(records({"w": [3.0]}), 1), train_reply(records({"w": [7.0]}), 3)]
    arrays, _ = train_round(strategy, 1, records({"w": [100.0]}), replies)
    assert values_of(arrays).tolist() == [6.0]  # (1 * 3 + 3 * 7) / 4
    assert strategy.momentum_vector is None


def test_dtypes_and_a_zero_dimensional_array_are_kept() -> None:
    sent = records({"w": [1.0, 1.0]}, np.float32)
    sent["s"] = records({"s": 4.0}, np.float32)["s"]
    strategy = FedAvgM(server_learning_rate=2.0)
    reply = records({"w": [0.0, 0.5]}, np.float32)
    reply["s"] = records({"s": 3.0}, np.float32)["s"]
    arrays, _ = train_round(strategy, 1, sent, [train_reply(reply)])
    # x - 2 * (x - mean): w = [1 - 2, 1 - 1] = [-1, 0]; s = 4 - 2 * 1 = 2.
    assert arrays is not None
    assert arrays["w"].dtype == "float32" and arrays["s"].shape == ()
    np.testing.assert_allclose(arrays["w"].numpy(), [-1.0, 0.0])
    assert float(arrays["s"].numpy()) == 2.0


@settings(max_examples=50, deadline=None)
@given(
    lr=st.floats(0.05, 2.0),
    start=st.lists(st.floats(-100, 100), min_size=3, max_size=3),
    local=st.lists(st.floats(-100, 100), min_size=6, max_size=6),
    weights=st.tuples(st.integers(1, 9), st.integers(1, 9)),
)
def test_momentum_zero_steps_lr_times_towards_the_fedavg_mean(
    lr: float, start: list[float], local: list[float], weights: tuple[int, int]
) -> None:
    sent = records({"w": start})
    replies = [
        train_reply(records({"w": local[:3]}), weights[0]),
        train_reply(records({"w": local[3:]}), weights[1]),
    ]
    mean = values_of(train_round(FedAvg(), 1, sent, replies)[0])
    stepped = values_of(train_round(FedAvgM(server_learning_rate=lr), 1, sent, replies)[0])
    np.testing.assert_allclose(stepped, np.asarray(start) + lr * (mean - start), atol=1e-9)
    same = values_of(train_round(FedAvgM(server_learning_rate=1.0), 1, sent, replies)[0])
    np.testing.assert_array_equal(same, mean)  # lr 1, momentum 0: FedAvg exactly
