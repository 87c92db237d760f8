"""`Bulyan` (El Mhamdi et al., 2018): a robust selection, then a trimmed mean around the median.

With ``n`` replies and ``f`` malicious nodes assumed (``n >= 4f + 3``): select
``theta = n - 2f`` replies by a Byzantine-resilient rule (MultiKrum by default); then, for
every coordinate, average the ``beta = theta - 2f`` selected values closest to their median.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from corolla.common.errors import InvalidArgument
from corolla.records import ArrayRecord, Message, MetricRecord, RecordDict
from corolla.serverapp.strategy.fedavg import MetricsAggrFn, without_arrays
from corolla.serverapp.strategy.fedmedian import (
    FiniteFedAvg,
    coordinatewise,
    usable_replies,
)
from corolla.serverapp.strategy.multikrum import select_multikrum

log = logging.getLogger(__name__)

SelectionRule = Callable[[list[RecordDict], int, int], list[RecordDict]]


class Bulyan(FiniteFedAvg):
    """Bulyan: MultiKrum-select ``n - 2f`` train replies, then average per coordinate the
    ``n - 4f`` selected values nearest the coordinate's median (``f = num_malicious_nodes``).

    ``selection_rule(contents, f, theta)`` picks ``theta`` of the replies' contents
    (RecordDicts); by default `select_multikrum`. A round with fewer than ``4f + 3`` usable
    replies keeps the previous arrays, with a warning (Bulyan's bound). The result is
    unweighted and cast back to the dtypes of the arrays sent (see `FedMedian` for dtypes,
    complex values and non-finite replies); the metrics come from the selected replies.
    """

    def __init__(
        self,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        num_malicious_nodes: int = 0,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: MetricsAggrFn | None = None,
        evaluate_metrics_aggr_fn: MetricsAggrFn | None = None,
        selection_rule: SelectionRule | None = None,
    ) -> None:
        if num_malicious_nodes < 0:
            raise InvalidArgument(
                f"num_malicious_nodes must not be negative, got {num_malicious_nodes}"
            )
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
        self.num_malicious_nodes = num_malicious_nodes
        self.selection_rule: SelectionRule = selection_rule or select_multikrum

    def summary(self) -> None:
        """FedAvg's settings, then the number of malicious nodes and the selection rule."""
        super().summary()
        log.info(
            "  Bulyan: %d malicious nodes assumed, selection rule %s",
            self.num_malicious_nodes,
            getattr(self.selection_rule, "__name__", repr(self.selection_rule)),
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Bulyan's aggregate of the replies' arrays, and the selected replies' metrics."""
        held = usable_replies(replies)
        if not held:
            return None, None
        f = self.num_malicious_nodes
        if len(held) < 4 * f + 3:
            log.warning(
                "[ROUND %d] Bulyan cannot aggregate: %d replies, it needs at least %d "
                "(4 * num_malicious_nodes + 3); keeping the previous arrays",
                server_round,
                len(held),
                4 * f + 3,
            )
            return None, None
        theta = len(held) - 2 * f
        beta = theta - 2 * f
        selected = self._select([reply.content for reply in held], theta)
        if len(selected) < beta:
            raise InvalidArgument(
                f"the selection rule kept {len(selected)} replies; Bulyan averages the {beta} "
                f"nearest the median, so it needs at least that many"
            )
        records = [_arrays_in(content, self.arrayrecord_key) for content in selected]
        arrays = coordinatewise(records, lambda stack: _mean_nearest_median(stack, beta))
        contents = [without_arrays(content) for content in selected]
        return arrays, self.train_metrics_aggr_fn(contents, self.weighted_by_key)

    def _select(self, contents: list[RecordDict], theta: int) -> list[RecordDict]:
        if self.selection_rule is select_multikrum:  # the default: use this strategy's key
            return select_multikrum(
                contents, self.num_malicious_nodes, theta, arrayrecord_key=self.arrayrecord_key
            )
        return self.selection_rule(contents, self.num_malicious_nodes, theta)


def _arrays_in(content: RecordDict, arrayrecord_key: str) -> ArrayRecord:
    record = content.get(arrayrecord_key)
    if not isinstance(record, ArrayRecord):
        raise InvalidArgument(f"a selected content has no ArrayRecord {arrayrecord_key!r}")
    return record


def _mean_nearest_median(stack: npt.NDArray[Any], beta: int) -> npt.NDArray[Any]:
    """Per coordinate, the mean of the ``beta`` values of ``stack`` nearest their median."""
    return _mean_nearest(stack, np.median(stack, axis=0), beta)


def _mean_nearest(
    stack: npt.NDArray[Any], reference: npt.NDArray[Any], beta: int
) -> npt.NDArray[Any]:
    nearest = np.argpartition(np.abs(stack - reference), beta - 1, axis=0)[:beta]
    values = np.take_along_axis(stack, nearest, axis=0)
    return np.asarray(np.mean(values, axis=0, dtype=np.result_type(stack.dtype, np.float64)))


def aggregate_n_closest_weights(
    ref_weights: Sequence[npt.NDArray[Any]],
    weights_list: Sequence[Sequence[npt.NDArray[Any]]],
    beta: int,
) -> list[npt.NDArray[Any]]:
    """Per layer and coordinate, the mean of the ``beta`` values of ``weights_list`` (one list
    of layers per model) nearest to ``ref_weights`` at that coordinate."""
    if not 1 <= beta <= len(weights_list):
        raise InvalidArgument(f"beta must be between 1 and {len(weights_list)}, got {beta}")
    return [
        _mean_nearest(np.stack([np.asarray(weights[layer]) for weights in weights_list]), ref, beta)
        for layer, ref in enumerate(ref_weights)
    ]
