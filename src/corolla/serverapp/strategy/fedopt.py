"""`FedOpt`: the shared base of the adaptive server optimizers of Reddi et al., 2020
(arxiv.org/abs/2003.00295): `FedAdam`, `FedAdagrad` and `FedYogi`.

Each round FedAvg's weighted mean gives the pseudo-gradient ``delta = mean - x`` (``x``: the
arrays sent for training); the first moment is ``m = beta_1 * m + (1 - beta_1) * delta``.
Subclasses update the second moment ``v`` their own way and step
``x + eta * m / (sqrt(v) + tau)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from corolla.common.errors import FailedPrecondition, InvalidArgument
from corolla.records import ArrayRecord, ConfigRecord, Message, RecordDict
from corolla.serverapp.grid import Grid
from corolla.serverapp.strategy.aggregate import (
    Layout,
    arrays_like,
    check_layout,
    layout_of,
    state_dtype,
)
from corolla.serverapp.strategy.fedavg import FedAvg, MetricsAggrFn

log = logging.getLogger(__name__)

NDArrayDict = dict[str, npt.NDArray[Any]]
STATE_KEYS = ("m_t", "v_t")  # the moments' names in a checkpoint


class FedOpt(FedAvg):
    """FedAvg plus a server optimizer with moments ``m_t`` and ``v_t`` (see the module).

    ``eta`` is the server learning rate, ``eta_l`` the client one (recorded and logged; the
    ClientApp applies it), ``beta_1`` and ``beta_2`` the moments' decay rates (in [0, 1)),
    ``tau`` the term that keeps the step finite where ``v`` is near 0. The other parameters
    are `FedAvg`'s. ``current_arrays`` (the arrays sent this round), ``m_t`` and ``v_t`` are
    NumPy arrays by name; the moments go into checkpoints so that a resumed run continues
    exactly. FedOpt itself does not step: use a subclass.
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
        beta_1: float = 0.0,
        beta_2: float = 0.0,
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
            min_usable_replies=min_usable_replies,
            min_usable_fraction=min_usable_fraction,
        )
        for name, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= beta < 1.0:
                raise InvalidArgument(f"{name} must be in [0, 1), got {beta}")
        self.current_arrays: NDArrayDict | None = None
        self.eta = eta
        self.eta_l = eta_l
        self.tau = tau
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.m_t: NDArrayDict | None = None
        self.v_t: NDArrayDict | None = None
        self._layout: Layout = {}

    def summary(self) -> None:
        super().summary()
        log.info(
            "  %s: eta %g, eta_l %g, beta_1 %g, beta_2 %g, tau %g",
            type(self).__name__,
            self.eta,
            self.eta_l,
            self.beta_1,
            self.beta_2,
            self.tau,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train messages; notes the arrays sent (read-only views, no copy)."""
        self.current_arrays = {key: array.view() for key, array in arrays.items()}
        self._layout = layout_of(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def _compute_deltat_and_mt(
        self, aggregated_arrayrecord: ArrayRecord
    ) -> tuple[NDArrayDict, NDArrayDict, NDArrayDict]:
        """``delta_t`` (mean minus the arrays sent), the updated ``m_t``, and the mean as
        NumPy arrays; the step shared by every FedOpt strategy."""
        if self.current_arrays is None:
            raise FailedPrecondition(
                f"{type(self).__name__}.aggregate_train needs configure_train first"
            )
        check_layout(aggregated_arrayrecord, self._layout)
        aggregated = {key: array.view() for key, array in aggregated_arrayrecord.items()}
        delta_t = {
            key: np.asarray(np.subtract(x, self.current_arrays[key], dtype=state_dtype(x.dtype)))
            for key, x in aggregated.items()
        }
        if not self.m_t:
            self.m_t = {key: np.zeros_like(d) for key, d in delta_t.items()}
        for key, m in self.m_t.items():
            m *= self.beta_1
            m += (1.0 - self.beta_1) * delta_t[key]
        return delta_t, self.m_t, aggregated

    def _second_moment(self, delta_t: NDArrayDict) -> NDArrayDict:
        """``v_t`` (zeros at first), ready for the subclass's in-place update."""
        if not self.v_t:
            self.v_t = {key: np.zeros_like(d) for key, d in delta_t.items()}
        return self.v_t

    def _step(self, eta: float) -> ArrayRecord:
        """``x + eta * m_t / (sqrt(v_t) + tau)`` in the dtypes of the arrays sent."""
        assert self.current_arrays is not None and self.m_t and self.v_t  # set by the caller
        stepped = {
            key: x + eta * self.m_t[key] / (np.sqrt(self.v_t[key]) + self.tau)
            for key, x in self.current_arrays.items()
        }
        return arrays_like(stepped, self._layout)

    def checkpoint_state(self) -> RecordDict:
        """``m_t`` and ``v_t`` (those set so far), each as an ArrayRecord."""
        moments = dict(zip(STATE_KEYS, (self.m_t, self.v_t), strict=True))
        return RecordDict({name: ArrayRecord(dict(m)) for name, m in moments.items() if m})

    def restore_checkpoint_state(self, state: RecordDict) -> None:
        restored: list[NDArrayDict | None] = []
        for name in STATE_KEYS:
            record = state.get(name)
            if isinstance(record, ArrayRecord):
                restored.append({key: np.array(a.view()) for key, a in record.items()})
            else:
                restored.append(None)
        self.m_t, self.v_t = restored
