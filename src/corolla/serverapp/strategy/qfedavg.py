"""`QFedAvg`: q-fair federated averaging (Li et al., 2020, openreview.net/pdf?id=ByexElSYDr).

With ``L = 1 / client_learning_rate``, each reply ``k`` (local arrays ``w_k``, training loss
``F_k``) gives ``Delta_k = L * (w - w_k)``, ``delta_k = F_k**q * Delta_k`` and
``h_k = q * F_k**(q - 1) * ||Delta_k||**2 + L * F_k**q``; the new arrays are
``w - sum(delta_k) / sum(h_k)``. Nodes with a higher loss weigh more, the more so the larger
``q`` is; ``q = 0`` gives the plain (unweighted) mean of the replies. Both sums fold one
reply at a time, so the replies are not held.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from corolla.common.errors import FailedPrecondition, InvalidArgument
from corolla.records import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from corolla.serverapp.grid import Grid
from corolla.serverapp.strategy.aggregate import arrays_like, layout_of, read_weight, state_dtype
from corolla.serverapp.strategy.fedavg import (
    FedAvg,
    MetricsAggrFn,
    skip_error_replies,
    without_arrays,
)
from corolla.serverapp.strategy.strategy import folds_replies

log = logging.getLogger(__name__)

_LOSS_EPSILON = 1e-10  # added to each loss, so that a zero loss still has a power


class QFedAvg(FedAvg):
    """q-FedAvg (see the module): ``client_learning_rate`` (required) estimates the
    Lipschitz constant as its inverse, ``q`` sets how much fairness counts, and each train
    reply needs its training loss under ``train_loss_key`` in a MetricRecord (replies
    without one are logged and left out). The other parameters are `FedAvg`'s; ``arrays``
    are not weighted by ``weighted_by_key`` (the metrics still are).
    """

    def __init__(
        self,
        client_learning_rate: float,
        q: float = 0.1,
        train_loss_key: str = "train_loss",
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
        if not client_learning_rate > 0:
            raise InvalidArgument(
                f"client_learning_rate must be positive, got {client_learning_rate}"
            )
        self.q = q
        self.client_learning_rate = client_learning_rate
        self.train_loss_key = train_loss_key
        self.current_arrays: ArrayRecord | None = None

    def summary(self) -> None:
        super().summary()
        log.info(
            "  QFedAvg: client_learning_rate %g, q %g, train loss under %r",
            self.client_learning_rate,
            self.q,
            self.train_loss_key,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train messages; notes the arrays sent as ``current_arrays``."""
        self.current_arrays = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def check_train_reply(self, reply: Message, arrays: ArrayRecord) -> str | None:
        """FedAvg's checks, and a non-negative training loss under ``train_loss_key``."""
        reason = super().check_train_reply(reply, arrays)
        if reason is not None:
            return reason
        try:
            read_weight(reply.content, self.train_loss_key)
        except InvalidArgument as exc:
            return f"invalid reply: {exc}"
        return None

    @folds_replies
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The q-FedAvg update from the replies (folded as they arrive) and their metrics."""
        if self.current_arrays is None:
            raise FailedPrecondition("QFedAvg.aggregate_train needs configure_train first")
        lipschitz = 1.0 / self.client_learning_rate
        layout = layout_of(self.current_arrays)
        weights = {key: array.view() for key, array in self.current_arrays.items()}
        sum_delta = {key: np.zeros(w.shape, state_dtype(w.dtype)) for key, w in weights.items()}
        sum_h = 0.0
        contents: list[RecordDict] = []
        for reply in skip_error_replies(replies):
            _, loss = read_weight(reply.content, self.train_loss_key)
            loss_q = float(np.float_power(loss + _LOSS_EPSILON, self.q))
            local: ArrayRecord = reply.content[self.arrayrecord_key]
            norm = 0.0
            for key, w in weights.items():
                gradient = _scaled_difference(w, local[key].view(), lipschitz, sum_delta[key])
                norm += float(np.sum(np.square(gradient), dtype=np.float64))
                sum_delta[key] += loss_q * gradient
            q_term = self.q * np.float_power(loss + _LOSS_EPSILON, self.q - 1.0) * norm
            sum_h += float(q_term) + lipschitz * loss_q
            contents.append(without_arrays(reply.content))
        if not contents:
            return None, None
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        if not sum_h > 0:
            log.warning("[ROUND %d] q-FedAvg: sum of h is %g, arrays kept", server_round, sum_h)
            return None, metrics
        updated = {key: w - sum_delta[key] / sum_h for key, w in weights.items()}
        return arrays_like(updated, layout), metrics


def _scaled_difference(
    w: npt.NDArray[Any], w_k: npt.NDArray[Any], scale: float, like: npt.NDArray[Any]
) -> npt.NDArray[Any]:
    """``scale * (w - w_k)`` in the dtype of ``like``, with one temporary."""
    difference = np.asarray(np.subtract(w, w_k, dtype=like.dtype))
    difference *= scale
    return difference
