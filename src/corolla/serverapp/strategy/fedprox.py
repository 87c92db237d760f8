"""`FedProx` (Li et al., 2018, arxiv.org/abs/1812.06127): FedAvg plus a proximal term.

The server side is FedAvg's; the difference is on the nodes, which add
``proximal_mu / 2 * ||w - w_global||^2`` to their local loss. The strategy tells them the
coefficient in every train config under ``"proximal-mu"``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from corolla.records import ArrayRecord, ConfigRecord, Message
from corolla.serverapp.grid import Grid
from corolla.serverapp.strategy.fedavg import FedAvg, MetricsAggrFn

log = logging.getLogger(__name__)

PROXIMAL_MU_KEY = "proximal-mu"


class FedProx(FedAvg):
    """FedAvg whose train messages carry ``proximal_mu`` under ``"proximal-mu"``.

    A ClientApp reads it as ``msg.content["config"]["proximal-mu"]`` and adds
    ``mu / 2 * ||w - w_global||^2`` to its training loss, ``w_global`` being the arrays it
    received. ``proximal_mu = 0.0`` makes it plain FedAvg. The other parameters are
    `FedAvg`'s.
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
        proximal_mu: float = 0.0,
        *,
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
            min_usable_replies=min_usable_replies,
            min_usable_fraction=min_usable_fraction,
        )
        self.proximal_mu = proximal_mu
        if proximal_mu == 0.0:
            log.warning("FedProx with proximal_mu=0.0 behaves exactly like FedAvg")

    def summary(self) -> None:
        super().summary()
        log.info("  FedProx: proximal_mu %g (sent as %r)", self.proximal_mu, PROXIMAL_MU_KEY)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train messages, their config holding ``"proximal-mu"``."""
        config = ConfigRecord({**config, PROXIMAL_MU_KEY: self.proximal_mu})
        return super().configure_train(server_round, arrays, config, grid)
