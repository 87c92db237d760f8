"""`FedYogi`: adaptive federated optimization with Yogi on the server (Reddi et al., 2020,
arxiv.org/abs/2003.00295)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from corolla.records import ArrayRecord, Message, MetricRecord
from corolla.serverapp.strategy.fedavg import MetricsAggrFn
from corolla.serverapp.strategy.fedopt import FedOpt
from corolla.serverapp.strategy.strategy import folds_replies


class FedYogi(FedOpt):
    """FedOpt with Yogi's second moment
    ``v = v - (1 - beta_2) * delta**2 * sign(v - delta**2)``, which moves ``v`` towards
    ``delta**2`` by a fixed fraction of ``delta**2`` (so it never goes negative); the step is
    ``x + eta * m / (sqrt(v) + tau)``.

    Parameters: `FedOpt`'s, with ``eta = 1e-2``, ``eta_l = 0.0316``, ``beta_1 = 0.9`` and
    ``beta_2 = 0.99`` by default.
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
        eta: float = 1e-2,
        eta_l: float = 0.0316,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
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
            beta_1=beta_1,
            beta_2=beta_2,
            tau=tau,
            min_usable_replies=min_usable_replies,
            min_usable_fraction=min_usable_fraction,
        )

    @folds_replies
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg's mean of the replies (folded as they arrive), then one Yogi step."""
        aggregated, metrics = super().aggregate_train(server_round, replies)
        if aggregated is None:
            return None, metrics
        delta_t, _, _ = self._compute_deltat_and_mt(aggregated)
        for key, v in self._second_moment(delta_t).items():
            squared = np.square(delta_t[key])
            v -= (1.0 - self.beta_2) * squared * np.sign(v - squared)
        return self._step(self.eta), metrics
