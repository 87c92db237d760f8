"""`FedAvgM` (Hsu et al., 2019, arxiv.org/abs/1909.06335): FedAvg with server momentum.

Each round the server treats ``g = w - mean`` (current arrays minus FedAvg's weighted mean)
as a gradient and takes an SGD step with momentum (the PyTorch convention, no Nesterov):
``v = g`` in the first round and ``v = momentum * v + g`` after, then
``w = w - server_learning_rate * v``. With momentum 0 and learning rate 1 it is FedAvg.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from corolla.common.errors import FailedPrecondition
from corolla.records import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from corolla.serverapp.grid import Grid
from corolla.serverapp.strategy.aggregate import arrays_like, check_layout, layout_of, state_dtype
from corolla.serverapp.strategy.fedavg import FedAvg, MetricsAggrFn
from corolla.serverapp.strategy.strategy import folds_replies

log = logging.getLogger(__name__)

MOMENTUM_KEY = "momentum"  # the momentum vector's name in a checkpoint


class FedAvgM(FedAvg):
    """FedAvg whose aggregate is applied as an SGD step with momentum on the server.

    ``server_learning_rate`` scales the step, ``server_momentum`` the momentum; the other
    parameters are `FedAvg`'s. ``current_arrays`` (the arrays the step starts from) and
    ``momentum_vector`` (one array per entry, in the model's order) are kept across rounds,
    and the momentum goes into checkpoints so that a resumed run continues exactly. The
    replies are folded as they arrive, as in FedAvg.
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
        server_learning_rate: float = 1.0,
        server_momentum: float = 0.0,
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
        self.server_learning_rate = server_learning_rate
        self.server_momentum = server_momentum
        self.server_opt = server_momentum != 0.0 or server_learning_rate != 1.0
        self.current_arrays: ArrayRecord | None = None
        self.momentum_vector: list[npt.NDArray[Any]] | None = None

    def summary(self) -> None:
        super().summary()
        log.info(
            "  FedAvgM: server optimization %s, learning rate %g, momentum %g",
            "on" if self.server_opt else "off",
            self.server_learning_rate,
            self.server_momentum,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train messages; the first call also sets ``current_arrays``."""
        if self.current_arrays is None:
            self.current_arrays = arrays
        return super().configure_train(server_round, arrays, config, grid)

    @folds_replies
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg's mean, turned into one momentum SGD step from ``current_arrays``."""
        aggregated, metrics = super().aggregate_train(server_round, replies)
        if not self.server_opt or aggregated is None:
            return aggregated, metrics
        if self.current_arrays is None:
            raise FailedPrecondition("FedAvgM.aggregate_train needs configure_train first")
        layout = layout_of(self.current_arrays)
        check_layout(aggregated, layout)
        old = [array.view() for array in self.current_arrays.values()]
        gradient = [
            np.asarray(np.subtract(w, aggregated[key].view(), dtype=state_dtype(dtype)))
            for w, (key, (_, dtype)) in zip(old, layout.items(), strict=True)
        ]  # the mean is a step against this "gradient": w - mean
        if self.server_momentum > 0.0:
            if self.momentum_vector is None:
                self.momentum_vector = gradient
            else:
                for velocity, g in zip(self.momentum_vector, gradient, strict=True):
                    velocity *= self.server_momentum
                    velocity += g
            gradient = self.momentum_vector
        lr = self.server_learning_rate
        stepped = {key: w - lr * g for key, w, g in zip(layout, old, gradient, strict=True)}
        self.current_arrays = arrays_like(stepped, layout)
        return self.current_arrays, metrics

    def checkpoint_state(self) -> RecordDict:
        """The momentum vector (if any) under ``"momentum"``."""
        if self.momentum_vector is None:
            return RecordDict()
        return RecordDict({MOMENTUM_KEY: ArrayRecord(list(self.momentum_vector))})

    def restore_checkpoint_state(self, state: RecordDict) -> None:
        momentum = state.get(MOMENTUM_KEY)
        if isinstance(momentum, ArrayRecord):
            self.momentum_vector = [np.array(array.view()) for array in momentum.values()]
