"""`Krum` (Blanchard et al., 2017): keep the one reply closest to its nearest neighbours."""

from __future__ import annotations

from corolla.serverapp.strategy.fedavg import MetricsAggrFn
from corolla.serverapp.strategy.multikrum import MultiKrum


class Krum(MultiKrum):
    """Krum: each round, the new arrays are those of the single train reply with the lowest
    Krum score (see `MultiKrum`, of which this is the case ``num_nodes_to_select=1``).

    With ``n`` replies and ``num_malicious_nodes = f``, a reply's score is the sum of the
    squared L2 distances from its arrays to those of its ``n - f - 2`` nearest other replies.
    The chosen reply's arrays become the new ones exactly as they came, and the round's
    train metrics are that reply's. `summary` (MultiKrum's) logs ``f``.
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
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
            num_malicious_nodes=num_malicious_nodes,
            num_nodes_to_select=1,
            weighted_by_key=weighted_by_key,
            arrayrecord_key=arrayrecord_key,
            configrecord_key=configrecord_key,
            train_metrics_aggr_fn=train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        )
