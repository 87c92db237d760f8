"""The RDP privacy accountant against the published formulas and figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from corolla.common.errors import InvalidArgument
from corolla.serverapp.privacy import (
    DEFAULT_ORDERS,
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    PrivacySpent,
    RdpAccountant,
    SamplingMethod,
    _rdp,
)

pytestmark = pytest.mark.timeout(60)

ADD_REMOVE = NeighboringRelation.ADD_OR_REMOVE_ONE


def config(
    sampling: SamplingMethod = SamplingMethod.POISSON,
    population: int = 100,
    delta: float = 1e-5,
    max_epsilon: float | None = None,
) -> PrivacyConfig:
    relation = (
        NeighboringRelation.REPLACE_ONE
        if sampling is SamplingMethod.WITHOUT_REPLACEMENT
        else ADD_REMOVE
    )
    return PrivacyConfig(
        target_delta=delta,
        population_size=population,
        neighboring_relation=relation,
        sampling_method=sampling,
        max_epsilon=max_epsilon,
    )


def composed(
    sampling: SamplingMethod,
    sigma: float,
    sample: int,
    count: int = 1,
    population: int = 100,
    orders: tuple[float, ...] | None = None,
) -> RdpAccountant:
    accountant = RdpAccountant(config(sampling, population), orders)
    accountant.compose(GaussianPrivacyEvent(sigma, sample, population), count)
    return accountant


# -- the Gaussian mechanism ------------------------------------------------------------------------


@pytest.mark.parametrize("sampling", [SamplingMethod.NO_AMPLIFICATION, SamplingMethod.POISSON])
def test_without_subsampling_rdp_is_order_over_twice_sigma_squared(
    sampling: SamplingMethod,
) -> None:
    # sigma = 2: a / (2 * 4) = a / 8 -> 1.5/8 = 0.1875, 2/8 = 0.25, 10/8 = 1.25, 64/8 = 8
    # (q = 1 for Poisson sampling: every client of the 100 in every release)
    accountant = composed(sampling, sigma=2.0, sample=100, orders=(1.5, 2.0, 10.0, 64.0))
    assert accountant.rdp == pytest.approx((0.1875, 0.25, 1.25, 8.0), rel=1e-15)


@pytest.mark.parametrize("order", [2.0, 3.0, 7.5, 32.0, 1.7])
def test_poisson_sampling_tends_to_the_gaussian_as_q_tends_to_one(order: float) -> None:
    # the sampled mechanism's series, not the q == 1 shortcut: a / (2 sigma^2) with sigma = 1.5
    rdp = _rdp.poisson_subsampled_gaussian(1 - 1e-9, 1.5, order)
    assert rdp == pytest.approx(order / 4.5, rel=1e-6)


def _log_a_by_quadrature(q: float, sigma: float, order: float) -> float:
    """log A_a = log E_{z ~ N(0, sigma^2)} [((1 - q) + q exp((2z - 1) / (2 sigma^2)))^a]
    (Mironov, Talwar, Zhang 2019, Section 3), by the trapezoid rule on a fine grid: an
    independent check of the series, for integer and fractional orders alike."""
    z = np.linspace(-40 * sigma, order + 40 * sigma, 400_001)
    log_pdf = -(z**2) / (2 * sigma**2) - math.log(sigma * math.sqrt(2 * math.pi))
    log_ratio = np.logaddexp(math.log1p(-q), math.log(q) + (2 * z - 1) / (2 * sigma**2))
    log_f = log_pdf + order * log_ratio
    top = log_f.max()
    return float(top + math.log(np.trapezoid(np.exp(log_f - top), z)))


@pytest.mark.parametrize(
    ("q", "sigma", "order"),
    [
        (0.01, 1.0, 2.0),
        (0.01, 1.0, 2.5),
        (0.1, 2.0, 7.3),
        (0.05, 0.8, 1.5),
        (0.01, 10.0, 20.0),
        (0.1, 100.0, 20.5),
        (1e-3, 1.0, 32.0),
        (0.3, 3.0, 63.0),
        (0.9, 0.5, 3.7),
    ],
)
def test_poisson_rdp_matches_the_integral_it_is_defined_by(
    q: float, sigma: float, order: float
) -> None:
    log_a = _rdp.poisson_subsampled_gaussian(q, sigma, order) * (order - 1)
    assert log_a == pytest.approx(_log_a_by_quadrature(q, sigma, order), rel=1e-6, abs=1e-12)


# -- composition and conversion -----------------------------------------------------------------


@pytest.mark.parametrize("sampling", list(SamplingMethod))
def test_t_releases_cost_t_times_one(sampling: SamplingMethod) -> None:
    orders = (1.5, 2.0, 5.0, 20.0)
    one = composed(sampling, sigma=1.3, sample=10, orders=orders)
    many = composed(sampling, sigma=1.3, sample=10, count=25, orders=orders)
    assert many.rdp == pytest.approx(tuple(25 * r for r in one.rdp), rel=1e-12)
    piecewise = RdpAccountant(config(sampling), orders)
    for _ in range(25):
        piecewise.compose(GaussianPrivacyEvent(1.3, 10, 100))
    assert piecewise.rdp == pytest.approx(many.rdp, rel=1e-12)
    assert piecewise.num_releases == many.num_releases == 25


def test_epsilon_of_one_order_follows_the_conversion_formula() -> None:
    # T = 10 releases at sigma = 2, order a = 8: RDP = 10 * 8 / 8 = 10;
    # eps = RDP + log(1 - 1/a) - log(delta * a) / (a - 1)
    #     = 10 + log(7/8) - log(8e-5) / 7 = 10 - 0.1335314 + 1.3476408 = 11.2141094
    accountant = composed(SamplingMethod.NO_AMPLIFICATION, 2.0, 100, count=10, orders=(8.0,))
    assert accountant.get_epsilon(1e-5) == pytest.approx(11.2141094, rel=1e-7)
    spent = accountant.get_privacy_spent()
    assert spent == PrivacySpent(
        epsilon=spent.epsilon,
        delta=1e-5,
        num_releases=10,
        accounting_method="rdp",
        optimal_order=8.0,
    )
    # and back: delta at that epsilon is the target delta
    assert accountant.get_delta(spent.epsilon) == pytest.approx(1e-5, rel=1e-9)


def test_nothing_spent_before_any_release() -> None:
    accountant = RdpAccountant(config())
    assert accountant.get_epsilon(1e-5) == 0.0 and accountant.num_releases == 0
    assert accountant.orders == DEFAULT_ORDERS


def test_the_published_moments_accountant_figure() -> None:
    # Abadi et al. 2016, "Deep Learning with Differential Privacy" (CCS; arXiv:1607.00133),
    # Section 3.1: q = 0.01, sigma = 4, delta = 1e-5, T = 10000 steps give epsilon ~ 1.26 with
    # the moments accountant, i.e. moments lambda = 1..32 (RDP orders 2..33) and the plain
    # conversion eps = min_a RDP(a) + log(1/delta) / (a - 1).
    orders = tuple(float(a) for a in range(2, 34))
    accountant = composed(SamplingMethod.POISSON, 4.0, 1, count=10_000, orders=orders)
    plain = min(
        r + math.log(1 / 1e-5) / (a - 1) for a, r in zip(orders, accountant.rdp, strict=True)
    )
    assert plain == pytest.approx(1.26, abs=0.005)
    # The tighter conversion (Canonne, Kamath, Steinke 2020) on the default orders does better.
    tight = composed(SamplingMethod.POISSON, 4.0, 1, count=10_000).get_epsilon(1e-5)
    assert 0.9 < tight < plain


@settings(max_examples=20, deadline=None)
@given(
    sigma=st.floats(0.5, 20.0),
    factor=st.floats(1.05, 4.0),
    sample=st.integers(1, 100),
    rounds=st.integers(1, 500),
)
# Once found by hypothesis: at small noise the fractional-order series converged too slowly
# and the order was dropped, so a little more noise gave a larger epsilon.
@example(sigma=0.5, factor=1.05078125, sample=76, rounds=15)
def test_more_noise_means_a_smaller_epsilon(
    sigma: float, factor: float, sample: int, rounds: int
) -> None:
    orders = (1.25, 1.5, 2.0, 3.5, 8.0, 16.0, 32.0, 64.0)
    for sampling in (SamplingMethod.POISSON, SamplingMethod.NO_AMPLIFICATION):
        low = composed(sampling, sigma, sample, rounds, orders=orders).get_epsilon(1e-5)
        high = composed(sampling, sigma * factor, sample, rounds, orders=orders).get_epsilon(1e-5)
        assert high <= low
        if low > 0:
            assert high < low


def test_subsampling_spends_less_than_releasing_everyone() -> None:
    # 1 client of 100 per release (q = 0.01) against all of them, 1000 releases at sigma 1.1
    sampled = composed(SamplingMethod.POISSON, 1.1, 1, count=1000).get_epsilon(1e-5)
    everyone = composed(SamplingMethod.NO_AMPLIFICATION, 1.1, 1, count=1000).get_epsilon(1e-5)
    assert sampled < everyone / 5
    wor = composed(SamplingMethod.WITHOUT_REPLACEMENT, 1.1, 1, count=1000).get_epsilon(1e-5)
    wor_all = composed(SamplingMethod.WITHOUT_REPLACEMENT, 1.1, 100, count=1000).get_epsilon(1e-5)
    assert wor < wor_all / 5


# -- sampling without replacement ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sigma", "expected"),
    [
        # order 2 of Theorem 9 (Wang, Balle, Kasiviswanathan 2019):
        # log(1 + q^2 * C(2, 2) * min(4 (e^(1/s^2) - 1), 2 e^(1/s^2))), q = 0.1
        # s = 1: min(4 * 1.71828183, 2 * 2.71828183) = 5.43656366 -> log(1.05436564) = 0.05293929
        (1.0, 0.05293929),
        # s = 2: min(4 * 0.28402542, 2 * 1.28402542) = 1.13610167 -> log(1.01136102) = 0.01129696
        (2.0, 0.01129696),
    ],
)
def test_sampling_without_replacement_at_order_two(sigma: float, expected: float) -> None:
    accountant = composed(SamplingMethod.WITHOUT_REPLACEMENT, sigma, 10, orders=(2.0,))
    assert accountant.rdp[0] == pytest.approx(expected, rel=1e-6)


def test_forward_differences_of_theorem_27() -> None:
    # h(m) = exp(m (m - 1) / 2) for sigma = 1: h = 1, 1, e, e^3, e^6, so
    # D^2 h(0) = e - 2 + 1 = e - 1, D^4 h(0) = e^6 - 4 e^3 + 6 e - 4 + 1
    diffs = _rdp._log_even_forward_differences(1.0)
    e = math.e
    assert diffs[2] == pytest.approx(math.log(e - 1), rel=1e-12)
    assert diffs[4] == pytest.approx(math.log(e**6 - 4 * e**3 + 6 * e - 3), rel=1e-12)
    # large sigma: the alternating sums cancel to ~1e-250, still computed (never None)
    assert all(d is not None for d in _rdp._log_even_forward_differences(300.0)[2::2])


def test_sampling_without_replacement_is_between_nothing_and_the_gaussian() -> None:
    # replace-one WOR at q = 0.05: below the plain Gaussian at every order, above zero
    orders = (1.5, 2.0, 3.0, 10.0, 100.0, 300.0)
    wor = composed(SamplingMethod.WITHOUT_REPLACEMENT, 0.9, 5, orders=orders).rdp
    for order, r in zip(orders, wor, strict=True):
        assert 0 < r <= order / (2 * 0.9**2)


# -- budget, state, validation ---------------------------------------------------------------------


def test_would_exceed_looks_ahead_without_spending() -> None:
    accountant = RdpAccountant(config(SamplingMethod.NO_AMPLIFICATION, max_epsilon=3.5), (8.0,))
    event = GaussianPrivacyEvent(2.0, 100, 100)  # eps after T releases: T + 1.2141094 (above)
    assert not accountant.would_exceed(event, count=2)
    assert accountant.would_exceed(event, count=3)
    assert accountant.num_releases == 0 and accountant.rdp == (0.0,)
    assert not accountant.would_exceed(event, max_epsilon=5.0, count=3)
    with pytest.raises(InvalidArgument, match="max_epsilon"):
        RdpAccountant(config()).would_exceed(GaussianPrivacyEvent(1.0, 1, 100))


def test_state_round_trips_through_json() -> None:
    accountant = composed(SamplingMethod.POISSON, 1.2, 10, count=40)
    accountant.compose(GaussianPrivacyEvent(0.8, 20, 100), 3)
    state = json.loads(json.dumps(accountant.state_dict()))
    restored = RdpAccountant(config())
    restored.load_state_dict(state)
    assert restored.num_releases == 43
    assert restored.get_epsilon(1e-5) == accountant.get_epsilon(1e-5)
    with pytest.raises(InvalidArgument, match="another PrivacyConfig"):
        RdpAccountant(config(population=99)).load_state_dict(state)
    with pytest.raises(InvalidArgument, match="schema"):
        restored.load_state_dict({**state, "schema_version": 2})


def test_invalid_models_and_events_raise_value_errors() -> None:
    with pytest.raises(ValueError, match="cannot be accounted"):
        PrivacyConfig(1e-5, 100, NeighboringRelation.REPLACE_ONE, SamplingMethod.POISSON)
    with pytest.raises(ValueError, match="target_delta"):
        PrivacyConfig(1.0, 100, ADD_REMOVE, SamplingMethod.POISSON)
    with pytest.raises(ValueError, match="sample_size"):
        GaussianPrivacyEvent(1.0, 101, 100)
    with pytest.raises(ValueError, match="noise_multiplier"):
        GaussianPrivacyEvent(0.0, 1, 100)
    accountant = RdpAccountant(config())
    with pytest.raises(ValueError, match="population_size"):
        accountant.compose(GaussianPrivacyEvent(1.0, 1, 50))
    with pytest.raises(ValueError, match="count"):
        accountant.compose(GaussianPrivacyEvent(1.0, 1, 100), 0)
    with pytest.raises(ValueError, match="delta"):
        accountant.get_epsilon(0.0)
    assert NeighboringRelation("replace-one") is NeighboringRelation.REPLACE_ONE
    assert isinstance(SamplingMethod.POISSON, str) and SamplingMethod("poisson").value == "poisson"
