"""FedAdam, FedAdagrad, FedYogi (and their FedOpt base): Reddi et al.'s server optimizers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategy_cases import records, train_reply, train_round, values_of

from corolla.app import ArrayRecord, Message
from corolla.common.errors import FailedPrecondition, InvalidArgument
from corolla.serverapp.strategy.fedadagrad import FedAdagrad
from corolla.serverapp.strategy.fedadam import FedAdam
from corolla.serverapp.strategy.fedavg import FedAvg
from corolla.serverapp.strategy.fedopt import FedOpt
from corolla.serverapp.strategy.fedyogi import FedYogi

pytestmark = pytest.mark.timeout(60)


def two_replies_with_mean(mean: list[float]) -> list[Message]:
    """Two equally weighted replies whose mean is ``mean`` (at mean - 1 and mean + 1)."""
    low = [m - 1.0 for m in mean]
    high = [m + 1.0 for m in mean]
    return [train_reply(records({"w": low})), train_reply(records({"w": high}))]


# -- FedAdagrad -------------------------------------------------------------------------------


def test_fedadagrad_two_rounds_by_hand() -> None:
    strategy = FedAdagrad(eta=0.1, tau=0.1)
    # Round 1: x = [0, 1], mean = [0.3, 0.6] -> delta = m = [0.3, -0.4];
    # v = delta**2 = [0.09, 0.16], sqrt(v) = [0.3, 0.4];
    # x += 0.1 * [0.3 / 0.4, -0.4 / 0.5] = [0.075, -0.08] -> [0.075, 0.92].
    first, _ = train_round(
        strategy, 1, records({"w": [0.0, 1.0]}), two_replies_with_mean([0.3, 0.6])
    )
    np.testing.assert_allclose(values_of(first), [0.075, 0.92])
    # Round 2: mean = [0.475, 0.92] -> delta = [0.4, 0]; v = [0.09 + 0.16, 0.16] = [0.25, 0.16];
    # x += 0.1 * [0.4 / (0.5 + 0.1), 0] = [0.0666..., 0] -> [0.141666..., 0.92].
    assert first is not None
    second, _ = train_round(strategy, 2, first, two_replies_with_mean([0.475, 0.92]))
    np.testing.assert_allclose(values_of(second), [0.075 + 0.04 / 0.6, 0.92])
    assert strategy.v_t is not None
    np.testing.assert_allclose(strategy.v_t["w"], [0.25, 0.16])


@settings(max_examples=40, deadline=None)
@given(means=st.lists(st.floats(-10, 10), min_size=1, max_size=6), eta=st.floats(0.01, 1.0))
def test_fedadagrad_never_steps_further_than_eta(means: list[float], eta: float) -> None:
    """|m| / sqrt(v) <= 1 since v sums every delta**2 (m being this round's delta)."""
    strategy = FedAdagrad(eta=eta, tau=1e-3)
    x = records({"w": [0.0]})
    for server_round, mean in enumerate(means, start=1):
        new, _ = train_round(strategy, server_round, x, two_replies_with_mean([mean]))
        assert new is not None
        assert abs(values_of(new)[0] - values_of(x)[0]) <= eta * (1 + 1e-12)
        x = new


# -- FedAdam ----------------------------------------------------------------------------------


def test_fedadam_two_rounds_by_hand() -> None:
    strategy = FedAdam(eta=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3)
    # Round 1 (t = 1): x = 0, mean = 0.2 -> delta = 0.2; m = 0.1 * 0.2 = 0.02;
    # v = 0.01 * 0.04 = 0.0004, sqrt(v) = 0.02;
    # eta_t = 0.1 * sqrt(1 - 0.99**2) / (1 - 0.9**2) = 0.1 * 0.1410674 / 0.19 = 0.0742460;
    # x = 0.0742460 * 0.02 / 0.021 = 0.0707105.
    first, _ = train_round(strategy, 1, records({"w": [0.0]}), two_replies_with_mean([0.2]))
    eta_1 = 0.1 * math.sqrt(1 - 0.99**2) / (1 - 0.9**2)
    x1 = eta_1 * 0.02 / 0.021
    assert values_of(first)[0] == pytest.approx(x1, rel=1e-12)
    assert x1 == pytest.approx(0.0707105, rel=1e-6)
    # Round 2 (t = 2): mean = x1 - 0.1 -> delta = -0.1; m = 0.9 * 0.02 + 0.1 * -0.1 = 0.008;
    # v = 0.99 * 0.0004 + 0.01 * 0.01 = 0.000496;
    # eta_t = 0.1 * sqrt(1 - 0.99**3) / (1 - 0.9**3) = 0.0635940;
    # x = x1 + 0.0635940 * 0.008 / (sqrt(0.000496) + 0.001) = x1 + 0.0218620.
    assert first is not None
    second, _ = train_round(strategy, 2, first, two_replies_with_mean([x1 - 0.1]))
    eta_2 = 0.1 * math.sqrt(1 - 0.99**3) / (1 - 0.9**3)
    step = eta_2 * 0.008 / (math.sqrt(0.000496) + 0.001)
    assert step == pytest.approx(0.0218620, rel=1e-5)
    assert values_of(second)[0] == pytest.approx(x1 + step, rel=1e-10)
    assert strategy.m_t is not None and strategy.v_t is not None
    assert strategy.m_t["w"][0] == pytest.approx(0.008)
    assert strategy.v_t["w"][0] == pytest.approx(0.000496)


@settings(max_examples=50, deadline=None)
@given(
    start=st.lists(st.floats(-50, 50), min_size=4, max_size=4),
    mean=st.lists(st.floats(-50, 50), min_size=4, max_size=4),
    beta_2=st.floats(0.0, 0.999),
)
def test_fedadam_first_step_follows_the_sign_of_the_pseudo_gradient(
    start: list[float], mean: list[float], beta_2: float
) -> None:
    """With beta_1 = 0, round 1 steps by eta_t * delta / (sqrt(1 - beta_2) * |delta| + tau):
    in the direction of delta = mean - x wherever delta is not 0."""
    strategy = FedAdam(beta_1=0.0, beta_2=beta_2)
    new, _ = train_round(strategy, 1, records({"w": start}), two_replies_with_mean(mean))
    delta = values_of(fedavg_mean(start, mean)) - np.asarray(start)
    moved = values_of(new) - np.asarray(start)
    clear = np.abs(delta) > 1e-9
    np.testing.assert_array_equal(np.sign(moved[clear]), np.sign(delta[clear]))


def fedavg_mean(start: list[float], mean: list[float]) -> ArrayRecord | None:
    return train_round(FedAvg(), 1, records({"w": start}), two_replies_with_mean(mean))[0]


# -- FedYogi ----------------------------------------------------------------------------------


def test_fedyogi_two_rounds_by_hand() -> None:
    strategy = FedYogi(eta=0.01, beta_1=0.9, beta_2=0.99, tau=1e-3)
    # Round 1: x = 0, mean = 0.2 -> delta = 0.2, m = 0.02;
    # v = 0 - 0.01 * 0.04 * sign(0 - 0.04) = 0.0004; x = 0.01 * 0.02 / (0.02 + 0.001).
    first, _ = train_round(strategy, 1, records({"w": [0.0]}), two_replies_with_mean([0.2]))
    x1 = 0.01 * 0.02 / 0.021
    assert values_of(first)[0] == pytest.approx(x1, rel=1e-12)
    # Round 2: delta = -0.1, delta**2 = 0.01; v = 0.0004 - 0.01 * 0.01 * sign(0.0004 - 0.01)
    # = 0.0005 (Adam would give 0.000496); m = 0.008; x = x1 + 0.01 * 0.008 / (sqrt(0.0005) +
    # 0.001) = x1 + 0.00342456.
    assert first is not None
    second, _ = train_round(strategy, 2, first, two_replies_with_mean([x1 - 0.1]))
    assert strategy.v_t is not None and strategy.v_t["w"][0] == pytest.approx(0.0005)
    step = 0.01 * 0.008 / (math.sqrt(0.0005) + 0.001)
    assert step == pytest.approx(0.00342456, rel=1e-5)
    assert values_of(second)[0] == pytest.approx(x1 + step, rel=1e-10)


@settings(max_examples=40, deadline=None)
@given(means=st.lists(st.floats(-10, 10), min_size=1, max_size=6), beta_2=st.floats(0.0, 0.999))
def test_fedyogi_moves_v_by_a_fixed_fraction_of_delta_squared(
    means: list[float], beta_2: float
) -> None:
    """|v_t - v_{t-1}| = (1 - beta_2) * delta**2 (unless v equals delta**2), and v >= 0."""
    strategy = FedYogi(beta_2=beta_2)
    x = records({"w": [0.0]})
    previous = 0.0
    for server_round, mean in enumerate(means, start=1):
        new, _ = train_round(strategy, server_round, x, two_replies_with_mean([mean]))
        assert new is not None and strategy.v_t is not None
        delta = mean - values_of(x)[0]
        v = float(strategy.v_t["w"][0])
        assert v >= 0
        if previous != delta**2:
            assert abs(v - previous) == pytest.approx((1 - beta_2) * delta**2, rel=1e-6, abs=1e-12)
        previous, x = v, new


# -- FedOpt -----------------------------------------------------------------------------------


def test_fedopt_is_the_shared_base_and_checks_its_betas() -> None:
    assert all(issubclass(cls, FedOpt) for cls in (FedAdam, FedAdagrad, FedYogi))
    assert issubclass(FedOpt, FedAvg)
    with pytest.raises(InvalidArgument, match="beta_1"):
        FedAdam(beta_1=1.0)
    with pytest.raises(InvalidArgument, match="beta_2"):
        FedYogi(beta_2=-0.1)
    with pytest.raises(FailedPrecondition, match="configure_train first"):
        FedAdam().aggregate_train(1, iter(two_replies_with_mean([1.0])))


def test_an_empty_round_keeps_the_arrays_and_the_moments() -> None:
    strategy = FedAdam()
    train_round(strategy, 1, records({"w": [0.0]}), two_replies_with_mean([1.0]))
    assert strategy.m_t is not None
    moments = {k: v.copy() for k, v in strategy.m_t.items()}
    assert train_round(strategy, 2, records({"w": [0.0]}), []) == (None, None)
    np.testing.assert_array_equal(strategy.m_t["w"], moments["w"])


def test_float32_and_zero_dimensional_arrays_keep_their_dtype_and_shape() -> None:
    sent = records({"w": [0.0, 0.0]}, np.float32)
    sent["s"] = records({"s": 1.0}, np.float32)["s"]
    reply = records({"w": [1.0, -1.0]}, np.float32)
    reply["s"] = records({"s": 2.0}, np.float32)["s"]
    arrays, _ = train_round(FedAdagrad(eta=0.5, tau=0.0), 1, sent, [train_reply(reply)])
    assert arrays is not None
    assert (arrays["w"].dtype, arrays["s"].dtype, arrays["s"].shape) == ("float32", "float32", ())
    # tau 0: x + eta * delta / |delta| = x + 0.5 * sign(delta).
    np.testing.assert_allclose(arrays["w"].numpy(), [0.5, -0.5])
    assert float(arrays["s"].numpy()) == 1.5
