"""Helpers for strategy tests: replies built by hand and one train round driven by hand."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from corolla.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.serverapp.strategy.fedavg import FedAvg
from corolla.simulation import InProcessGrid

Values = Mapping[str, Sequence[float] | float | npt.NDArray[Any]]


def records(values: Values, dtype: Any = np.float64) -> ArrayRecord:
    """An ArrayRecord of ``{name: values}``, every array of ``dtype``."""
    return ArrayRecord({key: np.asarray(v, dtype=dtype) for key, v in values.items()})


def train_reply(
    arrays: ArrayRecord, num_examples: float = 1, node_id: int = 1, **metrics: float
) -> Message:
    """A train reply from ``node_id`` carrying ``arrays`` and ``num-examples`` (+ metrics)."""
    sent = Message(RecordDict(), dst_node_id=node_id, message_type="train")
    metric_record = MetricRecord({**metrics, "num-examples": num_examples})
    return Message(RecordDict({"arrays": arrays, "metrics": metric_record}), reply_to=sent)


def idle_grid(num_nodes: int = 2) -> InProcessGrid:
    """A grid whose nodes are only sampled, never sent anything (rounds driven by hand)."""
    return InProcessGrid(ClientApp(), num_nodes=num_nodes)


def train_round(
    strategy: FedAvg, server_round: int, sent: ArrayRecord, replies: Sequence[Message]
) -> tuple[ArrayRecord | None, MetricRecord | None]:
    """What ``strategy`` makes of ``replies`` to ``sent`` in ``server_round``: configure_train
    (which notes the arrays sent), then aggregate_train on a one-pass iterator."""
    list(strategy.configure_train(server_round, sent, ConfigRecord(), idle_grid()))
    return strategy.aggregate_train(server_round, iter(replies))


def values_of(arrays: ArrayRecord | None, key: str = "w") -> npt.NDArray[Any]:
    assert arrays is not None
    return arrays[key].numpy()
