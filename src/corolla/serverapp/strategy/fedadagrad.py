"""`FedAdagrad`: adaptive federated optimization with Adagrad on the server (Reddi et al.,
2020, arxiv.org/abs/2003.00295)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from corolla.records import ArrayRecord, Message, MetricRecord
from corolla.serverapp.strategy.fedavg import MetricsAggrFn
from corolla.serverapp.strategy.fedopt import FedOpt
from corolla.serverapp.strategy.strategy import folds_replies


class FedAdagrad(FedOpt):
    """FedOpt with Adagrad's second moment ``v = v + delta**2`` and no momentum
    (``beta_1 = beta_2 = 0``): the step is ``x + eta * delta / (sqrt(v) + tau)``.

    Parameters: `FedOpt`'s but ``beta_1`` and ``beta_2``, which Adagrad does not have.
    """

    def __init__(
        self,
        *,
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
        eta: float = 1e-1,
        eta_l: float = 1e-1,
        tau: float = 1e-3,
        min_usable_replies: int = 1,
        min_usable_fraction: float = 0.0,
    ) -> None:
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
            eta=eta,
            eta_l=eta_l,
            beta_1=0.0,
            beta_2=0.0,
            tau=tau,
            min_usable_replies=min_usable_replies,
            min_usable_fraction=min_usable_fraction,
        )

    @folds_replies
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg's mean of the replies (folded as they arrive), then one Adagrad step."""
        aggregated, metrics = super().aggregate_train(server_round, replies)
        if aggregated is None:
            return None, metrics
        delta_t, _, _ = self._compute_deltat_and_mt(aggregated)
        for key, v in self._second_moment(delta_t).items():
            v += np.square(delta_t[key])
        return self._step(self.eta), metrics
