"""`FedTrimmedAvg` (Yin et al., 2018): the coordinate-wise trimmed mean of the replies' arrays."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from corolla.common.errors import InvalidArgument
from corolla.records import ArrayRecord, Message, MetricRecord
from corolla.serverapp.strategy.fedavg import MetricsAggrFn
from corolla.serverapp.strategy.fedmedian import (
    FiniteFedAvg,
    coordinatewise,
    reply_arrays,
    train_metrics,
    usable_replies,
)

log = logging.getLogger(__name__)


class FedTrimmedAvg(FiniteFedAvg):
    """Trimmed-mean averaging: per coordinate, drop the ``beta`` fraction of lowest and of
    highest values among the train replies, and average the rest.

    Of ``n`` replies, ``int(beta * n)`` are cut from each end (``beta=0.2`` of 5: the minimum
    and the maximum), coordinate by coordinate; the mean is unweighted and cast back to the
    dtypes of the arrays sent (see `FedMedian` for dtypes, complex values and non-finite
    replies). ``beta`` must lie in ``[0, 0.5]``; a round where it would cut every reply (0.5
    of an even number) keeps the previous arrays, with a warning. Everything else is `FedAvg`.
    """

    def __init__(
        self,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: MetricsAggrFn | None = None,
        evaluate_metrics_aggr_fn: MetricsAggrFn | None = None,
        beta: float = 0.2,
    ) -> None:
        if not 0.0 <= beta <= 0.5:
            raise InvalidArgument(f"beta must be between 0 and 0.5, got {beta}")
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
            weighted_by_key=weighted_by_key,
            arrayrecord_key=arrayrecord_key,
            configrecord_key=configrecord_key,
            train_metrics_aggr_fn=train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        )
        self.beta = beta

    def summary(self) -> None:
        """FedAvg's settings, then ``beta``."""
        super().summary()
        log.info("  FedTrimmedAvg: beta %g (fraction cut from each end, per coordinate)", self.beta)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The coordinate-wise trimmed mean of the replies' arrays, and their metrics."""
        held = usable_replies(replies)
        if not held:
            return None, None
        cut = int(self.beta * len(held))
        if 2 * cut >= len(held):
            log.warning(
                "[ROUND %d] FedTrimmedAvg cannot aggregate: beta %g cuts %d of %d replies from "
                "each end, leaving none; keeping the previous arrays",
                server_round,
                self.beta,
                cut,
                len(held),
            )
            return None, None
        records = reply_arrays(held, self.arrayrecord_key)
        arrays = coordinatewise(records, lambda stack: trim_mean(stack, self.beta))
        return arrays, train_metrics(self, held)


def trim_mean(array: npt.NDArray[Any], cut_fraction: float) -> npt.NDArray[Any]:
    """The mean along axis 0 of ``array`` once ``int(cut_fraction * len(array))`` of the lowest
    and as many of the highest values are cut, coordinate by coordinate (as
    ``scipy.stats.trim_mean``). Raises `InvalidArgument` (a `ValueError`) if none are left.
    """
    count = array.shape[0]
    cut = int(cut_fraction * count)
    if cut < 0 or 2 * cut >= count:
        raise InvalidArgument(
            f"cutting {cut} of {count} values from each end leaves none to average"
        )
    # Only the order statistics at both cut points need to be in place for the slice between.
    ordered = np.partition(array, (cut, count - cut - 1), axis=0)
    kept = ordered[cut : count - cut]
    return np.asarray(np.mean(kept, axis=0, dtype=np.result_type(kept.dtype, np.float64)))
