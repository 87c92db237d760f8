"""Clipping and noising of model updates, shared by the DP mods and the DP strategy wrappers.

The config and metric keys are the protocol between Flower's client-side DP wrappers and mods
(the wrapper sends ``clipping_norm`` in the train config; `adaptiveclipping_mod` returns
``norm_bit``, 1 if the update was clipped). Pure NumPy on lists of arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from corolla.records import Array, ArrayRecord

KEY_CLIPPING_NORM = "clipping_norm"
KEY_NORM_BIT = "norm_bit"

NDArray = npt.NDArray[Any]


def l2_norm(arrays: Sequence[NDArray]) -> float:
    """The L2 norm of all the arrays' elements taken together (computed in float64)."""
    total = 0.0
    for array in arrays:
        flat = np.asarray(array, dtype=np.float64).reshape(-1)
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def clip_update(
    received: Sequence[NDArray], sent: Sequence[NDArray], clipping_norm: float
) -> tuple[list[NDArray], bool]:
    """``received`` with its update (``received - sent``) scaled down to L2 norm at most
    ``clipping_norm``, each array in its own dtype; and whether it had to be scaled.

    An update within the norm leaves ``received`` as it is (the same arrays, not a recomputed
    ``sent + update`` that could differ in the last bit).
    """
    updates = [np.subtract(r, s, dtype=np.float64) for r, s in zip(received, sent, strict=True)]
    norm = l2_norm(updates)
    if norm <= clipping_norm:
        return list(received), False
    scale = clipping_norm / norm
    clipped = [
        np.asarray(s + u * scale).astype(np.asarray(r).dtype, copy=False)
        for r, s, u in zip(received, sent, updates, strict=True)
    ]
    return clipped, True


def add_gaussian_noise(
    arrays: Sequence[NDArray], std: float, rng: np.random.Generator
) -> list[NDArray]:
    """New arrays: each of ``arrays`` plus i.i.d. N(0, std^2) noise, kept in its dtype."""
    return [
        np.asarray(a + rng.normal(0.0, std, np.shape(a))).astype(np.asarray(a).dtype, copy=False)
        for a in arrays
    ]


def gaussian_std(noise_multiplier: float, clipping_norm: float, num_sampled_clients: int) -> float:
    """Central DP: the noise on a mean of ``num_sampled_clients`` updates clipped to
    ``clipping_norm`` (McMahan et al. 2017, arXiv:1710.06963)."""
    return float(noise_multiplier * clipping_norm / num_sampled_clients)


def local_gaussian_std(sensitivity: float, epsilon: float, delta: float) -> float:
    """Local DP: the classic Gaussian mechanism's noise for (epsilon, delta),
    ``sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon`` (Dwork and Roth 2014, Theorem A.1)."""
    return sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon


def arrays_of(record: ArrayRecord) -> list[NDArray]:
    """Read-only views of a record's arrays, in order (no copy)."""
    return [array.view() for array in record.values()]


def record_of(keys: Sequence[str], arrays: Sequence[NDArray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(a)) for k, a in zip(keys, arrays, strict=True)})
