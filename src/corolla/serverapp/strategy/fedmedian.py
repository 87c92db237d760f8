"""`FedMedian` (Yin et al., 2018): the coordinate-wise median of the replies' arrays.

Also the pieces the strategies that hold a round's replies share (order statistics, Krum,
Bulyan, XGBoost): taking the usable replies in a fixed order, applying a statistic to every
coordinate across replies, and aggregating the metrics as `FedAvg` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from corolla.common.errors import InvalidArgument
from corolla.records import ArrayRecord, Message, MetricRecord
from corolla.serverapp.strategy.aggregate import arrays_like, check_layout, layout_of
from corolla.serverapp.strategy.fedavg import FedAvg, without_arrays

log = logging.getLogger(__name__)

# Reduces a stack of real values, shape (replies, *shape), to one value per coordinate.
Statistic = Callable[[npt.NDArray[Any]], npt.NDArray[Any]]


class FiniteFedAvg(FedAvg):
    """What the order-statistic strategies share: a train reply must also hold only finite
    values (one NaN would spread through a median or a distance)."""

    def check_train_reply(self, reply: Message, arrays: ArrayRecord) -> str | None:
        """`FedAvg.check_train_reply`, and only finite values in the arrays."""
        return super().check_train_reply(reply, arrays) or finite_reason(
            reply.content[self.arrayrecord_key]
        )


class FedMedian(FiniteFedAvg):
    """Federated median: the new arrays are the coordinate-wise median of the train replies'.

    Sampling, messages, evaluation and metrics are `FedAvg`'s; only the arrays differ. The
    median is unweighted (``weighted_by_key`` weights the metrics only), computed in float64
    (in the arrays' own precision for floats) and cast back to the dtypes of the arrays sent,
    integers and bools rounded. Complex arrays take the median of the real and the imaginary
    parts separately. Replies whose arrays hold NaN or infinity are left out (see
    `finite_reason`): a single one would otherwise decide the coordinates it touches.
    """

    def summary(self) -> None:
        """FedAvg's settings, then how the arrays are aggregated."""
        super().summary()
        log.info("  FedMedian: arrays are the coordinate-wise median of the train replies")

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The coordinate-wise median of the replies' arrays, and their aggregated metrics."""
        held = usable_replies(replies)
        if not held:
            return None, None
        arrays = coordinatewise(reply_arrays(held, self.arrayrecord_key), _median)
        return arrays, train_metrics(self, held)


def _median(stack: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return np.asarray(np.median(stack, axis=0))


# -- shared by the strategies that hold a round's replies ------------------------------------------


def usable_replies(replies: Iterable[Message]) -> list[Message]:
    """``replies`` without error replies (logged), in the order of their nodes' ids.

    `Strategy.start` leaves error replies out already; replies gathered by other means (e.g.
    ``grid.send_and_receive``) may still have them. The fixed order makes the result of a
    round independent of the order in which the replies arrived.
    """
    held = []
    for reply in replies:
        if reply.has_error():
            log.warning(
                "Skipping the error reply of node %d: %s",
                reply.metadata.src_node_id,
                reply.error.reason,
            )
            continue
        held.append(reply)
    return sorted(held, key=lambda reply: reply.metadata.src_node_id)


def reply_arrays(replies: Sequence[Message], arrayrecord_key: str) -> list[ArrayRecord]:
    """The ArrayRecord each reply holds under ``arrayrecord_key``."""
    records = []
    for reply in replies:
        record = reply.content.get(arrayrecord_key)
        if not isinstance(record, ArrayRecord):
            raise InvalidArgument(
                f"the reply of node {reply.metadata.src_node_id} has no ArrayRecord "
                f"{arrayrecord_key!r}"
            )
        records.append(record)
    return records


def train_metrics(strategy: FedAvg, replies: Sequence[Message]) -> MetricRecord:
    """The replies' metrics, aggregated by the strategy's ``train_metrics_aggr_fn``."""
    contents = [without_arrays(reply.content) for reply in replies]
    return strategy.train_metrics_aggr_fn(contents, strategy.weighted_by_key)


def finite_reason(record: ArrayRecord) -> str | None:
    """Why ``record`` cannot enter an order statistic (NaN or infinite values), or None."""
    for key, array in record.items():
        values = array.view()
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            return f"array {key!r} holds NaN or infinite values"
    return None


def coordinatewise(records: Sequence[ArrayRecord], statistic: Statistic) -> ArrayRecord:
    """``statistic`` of every coordinate of every array across ``records``.

    All records need the first one's names, shapes and compatible dtypes; the result has
    the first record's dtypes. ``statistic`` sees real values only: float64 (or the arrays'
    own float dtype, so float32 or longdouble values enter order statistics exactly), with
    the real and imaginary parts of complex arrays handled apart. Each array is stacked once
    (a copy of it from every record), one array at a time.
    """
    if not records:
        raise InvalidArgument("no arrays to aggregate")
    layout = layout_of(records[0])
    for record in records[1:]:
        check_layout(record, layout)
    values = {}
    for key in layout:
        stack = np.stack([record[key].view() for record in records])
        if stack.dtype.kind == "c":
            values[key] = _real(statistic, stack.real) + 1j * _real(statistic, stack.imag)
        else:
            values[key] = _real(statistic, stack)
    return arrays_like(values, layout)


def _real(statistic: Statistic, stack: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if stack.dtype.kind != "f":
        stack = stack.astype(np.float64)
    return np.asarray(statistic(stack))
