"""Rényi DP of the Gaussian mechanism, plain or subsampled, and its conversion to (epsilon, delta).

Everything that can overflow is computed in log space. References:

- Mironov 2017, "Rényi Differential Privacy" (arXiv:1702.07476): a Gaussian mechanism with
  noise multiplier ``s`` has RDP ``a / (2 s^2)`` at order ``a``; RDP adds up under composition.
- Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism"
  (arXiv:1908.10530): Poisson sampling with rate ``q``, add/remove-one neighbours; ``A_a`` as a
  finite sum for integer orders, and (Section 3.3) as two series for fractional ones.
- Wang, Balle, Kasiviswanathan 2019, "Subsampled Rényi Differential Privacy and Analytical
  Moments Accountant" (arXiv:1808.00087): sampling without replacement, replace-one neighbours
  (Theorem 9, with the tighter term of Theorem 27 for orders up to 256; Corollary 10 for
  fractional orders).
- Canonne, Kamath, Steinke 2020 (arXiv:2004.00010, Proposition 12) and Asoodeh et al. 2020
  (arXiv:2001.05990): RDP to (epsilon, delta).
"""

from __future__ import annotations

import decimal
import functools
import math
from collections.abc import Sequence

# Orders an accountant tracks unless told otherwise: dense near 1 (large noise), sparse far out
# (small noise). The same grid as Google's dp-accounting, which Flower's accountant uses.
DEFAULT_ORDERS: tuple[float, ...] = (
    tuple(1 + x / 10 for x in range(1, 100))
    + tuple(float(a) for a in range(11, 64))
    + (128.0, 256.0, 512.0, 1024.0)
)

INF = math.inf
_LOG2 = math.log(2.0)
_LOG4 = math.log(4.0)
_FRACTIONAL_TERMS = 1000  # a series not converged by then: bounded by the next integer order
_TIGHT_WOR_ORDERS = 256  # Theorem 27's term is computed up to this order, Theorem 9's beyond


def gaussian(noise_multiplier: float, order: float) -> float:
    """RDP of the Gaussian mechanism at ``order`` (Mironov 2017, Corollary 3)."""
    return order / (2 * noise_multiplier**2)


def poisson_subsampled_gaussian(q: float, noise_multiplier: float, order: float) -> float:
    """RDP at ``order`` of the Gaussian mechanism on a Poisson sample of rate ``q``."""
    if q == 0:
        return 0.0
    if math.isinf(order):
        return INF
    if q == 1:
        return gaussian(noise_multiplier, order)
    if not float(order).is_integer():
        log_a = _poisson_log_a_frac(q, noise_multiplier, order)
        if log_a is not None:
            return log_a / (order - 1)
        # The series did not converge (small noise): RDP does not decrease with the order
        # (Mironov 2017, Proposition 9), so the next integer order's exact value bounds it.
        order = math.ceil(order)
    return _poisson_log_a_int(q, noise_multiplier, int(order)) / (order - 1)


def _poisson_log_a_int(q: float, sigma: float, alpha: int) -> float:
    # A_a = sum_k C(a, k) (1-q)^(a-k) q^k exp((k^2 - k) / (2 sigma^2))
    log_q, log_1mq = math.log(q), math.log1p(-q)
    return _log_sum_exp(
        [
            math.log(math.comb(alpha, k))
            + k * log_q
            + (alpha - k) * log_1mq
            + (k * k - k) / (2 * sigma**2)
            for k in range(alpha + 1)
        ]
    )


def _poisson_log_a_frac(q: float, sigma: float, alpha: float) -> float | None:
    # A_a = A_0 + A_1, the integrals below and above z0, each a series over i >= 0 whose terms
    # carry the generalized binomial coefficient C(a, i); past i > a those alternate in sign.
    # Positive and negative terms are summed apart (in log space) and subtracted at the end.
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    log_q, log_1mq = math.log(q), math.log1p(-q)
    scale = math.sqrt(2) * sigma
    log_pos = log_neg = last0 = last1 = -INF
    for i in range(_FRACTIONAL_TERMS):
        j = alpha - i
        log_coef = math.lgamma(alpha + 1) - math.lgamma(i + 1) - math.lgamma(j + 1)
        log_s0 = (
            log_coef
            + i * log_q
            + j * log_1mq
            + (i * i - i) / (2 * sigma**2)
            + _log_half_erfc((i - z0) / scale)
        )
        log_s1 = (
            log_coef
            + j * log_q
            + i * log_1mq
            + (j * j - j) / (2 * sigma**2)
            + _log_half_erfc((z0 - j) / scale)
        )
        if j + 1 > 0 or math.ceil(-(j + 1)) % 2 == 0:  # the sign of Gamma(a - i + 1)
            log_pos = _log_add(log_pos, _log_add(log_s0, log_s1))
        else:
            log_neg = _log_add(log_neg, _log_add(log_s0, log_s1))
        shrinking = log_s0 < last0 and log_s1 < last1
        if shrinking and max(log_s0, log_s1) < log_pos - 30:
            break
        last0, last1 = log_s0, log_s1
    else:
        # Slow (polynomial) tails at small noise. Past i > a + 1 the terms alternate in sign
        # and shrink, so the sum lies within the last term of the partial sum: add it.
        if not (shrinking and alpha + 2 < _FRACTIONAL_TERMS):
            return None  # no such bound: the caller uses the next integer order
        tail = _log_add(last0, last1)
        if log_neg >= log_pos:
            return _log_add(_log_add(log_pos, log_neg), tail)
        return _log_add(log_pos + math.log1p(-math.exp(log_neg - log_pos)), tail)
    if log_neg >= log_pos:  # cancelled beyond float precision: the magnitudes bound A_a
        return _log_add(log_pos, log_neg)
    return log_pos + math.log1p(-math.exp(log_neg - log_pos))


def sampled_without_replacement_gaussian(q: float, noise_multiplier: float, order: float) -> float:
    """RDP at ``order`` of the Gaussian mechanism on a uniform subset of a fraction ``q`` of the
    population (replace-one neighbours)."""
    if q == 0:
        return 0.0
    if q == 1:
        return gaussian(noise_multiplier, order)
    if math.isinf(order):
        return INF
    if float(order).is_integer():
        return _wor_log_a_int(q, noise_multiplier, int(order)) / (order - 1)
    # Corollary 10: the cumulant (a - 1) * RDP(a) is bounded by interpolating between the
    # neighbouring integer orders.
    low, high = math.floor(order), math.ceil(order)
    t = order - low
    log_a_low = _wor_log_a_int(q, noise_multiplier, low)
    log_a_high = _wor_log_a_int(q, noise_multiplier, high)
    return ((1 - t) * log_a_low + t * log_a_high) / (order - 1)


def _wor_log_a_int(q: float, sigma: float, alpha: int) -> float:
    """log of Theorem 9's bound on exp((alpha - 1) * RDP(alpha)) for an integer order."""
    if alpha <= 1:
        return 0.0
    eps2 = 1 / sigma**2  # the Gaussian's RDP at order 2
    log_expm1_eps2 = eps2 + math.log1p(-math.exp(-eps2))  # log(e^eps2 - 1), stable
    log_q = math.log(q)
    terms = [
        0.0,
        2 * log_q + math.log(math.comb(alpha, 2)) + min(_LOG4 + log_expm1_eps2, _LOG2 + eps2),
    ]
    diffs = _log_even_forward_differences(sigma) if alpha <= _TIGHT_WOR_ORDERS else None
    for j in range(3, alpha + 1):
        log_b = _LOG2 + (j - 1) * j / (2 * sigma**2)  # 2 exp((j - 1) RDP(j))
        if diffs is not None:
            low, high = diffs[2 * (j // 2)], diffs[2 * ((j + 1) // 2)]
            if low is not None and high is not None:
                log_b = min(log_b, _LOG4 + 0.5 * (low + high))
        terms.append(j * log_q + math.log(math.comb(alpha, j)) + log_b)
    return _log_sum_exp(terms)


@functools.lru_cache(maxsize=64)
def _log_even_forward_differences(sigma: float) -> tuple[float | None, ...]:
    """``log(D^l h(0))`` at even l up to 256 (None at odd l), where ``D^l`` is the l-th forward
    difference and ``h(x) = exp(x (x - 1) / (2 sigma^2))`` (Theorem 27's quantity); None too
    where it could not be computed reliably (the caller then uses Theorem 9's term, always
    valid).

    The alternating sums cancel badly for large ``sigma``, so they are computed in decimal
    arithmetic, with as many digits as an error bound asks for. Even differences are positive
    (every even derivative of ``exp(c u^2)`` is), which bounds them from below.
    """
    top = _TIGHT_WOR_ORDERS
    precision = 60 + math.ceil(top * math.log10(2))
    while True:
        values, ok = _forward_differences(sigma, top, precision)
        if all(ok[2::2]) or precision >= 6000:
            break
        precision = min(6000, precision + max(20, _digits_short(sigma, values, ok)))
    return tuple(
        float(value.ln()) if good and level % 2 == 0 else None
        for level, (value, good) in enumerate(zip(values, ok, strict=True))
    )


def _forward_differences(
    sigma: float, top: int, precision: int
) -> tuple[list[decimal.Decimal], list[bool]]:
    with decimal.localcontext() as ctx:
        ctx.prec = precision
        ctx.Emax, ctx.Emin = decimal.MAX_EMAX, decimal.MIN_EMIN
        ctx.traps[decimal.Underflow] = ctx.traps[decimal.Overflow] = False
        # h(m + 1) = h(m) * g^m with g = exp(1 / sigma^2): one exp, then products
        g = (1 / decimal.Decimal(sigma) ** 2).exp()
        row, ratio = [decimal.Decimal(1)], decimal.Decimal(1)
        for _ in range(top):
            row.append(row[-1] * ratio)
            ratio *= g
        heights = row[:]
        values, ok = [row[0]], [True]
        for level in range(1, top + 1):
            row = [row[i + 1] - row[i] for i in range(len(row) - 1)]
            values.append(row[0])
            ok.append(
                row[0] > 0 and row[0].adjusted() > _log10_error(sigma, level, heights, precision)
            )
    return values, ok


def _log10_error(sigma: float, level: int, heights: list[decimal.Decimal], precision: int) -> int:
    """Digits (log10) of an upper bound on the error of ``D^level h(0)``, plus 8 to spare.

    ``h(m)`` is a product of ``2m`` rounded factors whose own errors grow with ``m / sigma^2``,
    so its relative error stays below ``(2 arg + (m + 2)^2)`` ulps, ``arg = m (m - 1) / (2
    sigma^2)``; each subtraction adds one ulp of its result, and every value at this level is
    below ``2^level * h(level)``.
    """
    arg = level * (level - 1) / (2 * sigma**2)
    factor = math.log10(2 * arg + (level + 2) ** 2)
    return (
        math.ceil(level * math.log10(2) + heights[level].adjusted() + 1 + factor)
        + 1
        - precision
        + 8
    )


def _digits_short(sigma: float, values: list[decimal.Decimal], ok: list[bool]) -> int:
    """Extra digits the failing even differences need, judged against their lower bound
    ``D^l h(0) >= c^(l/2) l! / (l/2)!`` with ``c = 1 / (2 sigma^2)``."""
    log10_c = -math.log10(2 * sigma**2)
    needed = 0
    for level in range(2, len(values), 2):
        if ok[level]:
            continue
        floor = level / 2 * log10_c + (math.lgamma(level + 1) - math.lgamma(level / 2 + 1)) / (
            math.log(10)
        )
        height = level * math.log10(2) + (level * (level - 1) / (2 * sigma**2)) / math.log(10)
        needed = max(needed, math.ceil(height + 12 - floor))
    return needed + 20


def epsilon_from_rdp(
    orders: Sequence[float], rdp: Sequence[float], delta: float
) -> tuple[float, float]:
    """The smallest epsilon (and the order giving it) the RDP curve implies at ``delta``."""
    best, best_order = INF, float(orders[0])
    for order, r in zip(orders, rdp, strict=True):
        if r < 0 or delta**2 + math.expm1(-r) > 0:
            eps = 0.0  # a negative RDP is rounding error; the second case is the KL bound
        elif order > 1.01:  # the bound is unstable as the order nears 1, and useless there
            eps = r + math.log1p(-1 / order) - math.log(delta * order) / (order - 1)
        else:
            eps = INF
        if eps < best:
            best, best_order = eps, float(order)
    return max(0.0, best), best_order


def delta_from_rdp(
    orders: Sequence[float], rdp: Sequence[float], epsilon: float
) -> tuple[float, float]:
    """The smallest delta (and the order giving it) the RDP curve implies at ``epsilon``."""
    best, best_order = INF, float(orders[0])
    for order, r in zip(orders, rdp, strict=True):
        log_delta = -INF if r <= 0 else 0.5 * math.log1p(-math.exp(-r))  # KL bound
        if order > 1.01 and r > 0:
            log_delta = min(
                log_delta,
                (order - 1) * (r - epsilon + math.log1p(-1 / order)) - math.log(order),
            )
        if log_delta < best:
            best, best_order = log_delta, float(order)
    return min(math.exp(best), 1.0), best_order


def _log_add(a: float, b: float) -> float:
    low, high = min(a, b), max(a, b)
    if low == -INF:
        return high
    return high + math.log1p(math.exp(low - high))


def _log_sum_exp(values: Sequence[float]) -> float:
    top = max(values)
    if math.isinf(top):
        return top
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def _log_half_erfc(x: float) -> float:
    """``log(erfc(x) / 2)``, accurate far into the tail where ``erfc`` underflows."""
    if x < 20:
        return math.log(math.erfc(x) / 2)
    # erfc(x) = exp(-x^2) / (x sqrt(pi)) * (1 - 1/(2x^2) + 3/(2x^2)^2 - 15/(2x^2)^3 + ...)
    u = 1 / (2 * x * x)
    series, term = 1.0, 1.0
    for n in range(1, 8):
        term *= -(2 * n - 1) * u
        series += term
    return -x * x - math.log(x) - 0.5 * math.log(math.pi) + math.log(series) - _LOG2
