"""`MultiKrum` (Blanchard et al., 2017): average the replies closest to the others.

Each of ``n`` replies gets a score: the sum of squared L2 distances from its arrays to those
of its ``n - f - 2`` nearest other replies (at least one), ``f`` being the number of
malicious nodes assumed. The ``m`` replies with the lowest scores are averaged, weighted as
in `FedAvg`. `Krum` is the case ``m = 1``; `Bulyan` uses the selection as its first step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from corolla.common.errors import InvalidArgument
from corolla.records import ArrayRecord, Message, MetricRecord, RecordDict
from corolla.serverapp.strategy.aggregate import (
    WeightedArrayMean,
    check_layout,
    layout_of,
    read_weight,
)
from corolla.serverapp.strategy.fedavg import MetricsAggrFn
from corolla.serverapp.strategy.fedmedian import (
    FiniteFedAvg,
    reply_arrays,
    train_metrics,
    usable_replies,
)

log = logging.getLogger(__name__)


class MultiKrum(FiniteFedAvg):
    """MultiKrum: each round, average the ``num_nodes_to_select`` train replies whose arrays
    are closest to their ``n - num_malicious_nodes - 2`` nearest neighbours.

    The mean of the selected replies is weighted by ``weighted_by_key`` (as in `FedAvg`), and
    so are the metrics, which come from the selected replies only. Krum's guarantee needs
    ``n >= 2 * num_malicious_nodes + 3`` replies; with fewer, the round still aggregates (as
    Flower does) and a warning says so. Replies whose arrays hold NaN or infinity are left
    out. Ties in the score go to the lower node id.
    """

    def __init__(
        self,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        num_malicious_nodes: int = 0,
        num_nodes_to_select: int = 1,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: MetricsAggrFn | None = None,
        evaluate_metrics_aggr_fn: MetricsAggrFn | None = None,
    ) -> None:
        if num_malicious_nodes < 0:
            raise InvalidArgument(
                f"num_malicious_nodes must not be negative, got {num_malicious_nodes}"
            )
        if num_nodes_to_select < 1:
            raise InvalidArgument(
                f"num_nodes_to_select must be at least 1, got {num_nodes_to_select}"
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
        self.num_nodes_to_select = num_nodes_to_select

    def summary(self) -> None:
        """FedAvg's settings, then the number of malicious nodes and of nodes selected."""
        super().summary()
        log.info(
            "  %s: %d malicious nodes assumed, %d nodes selected per round",
            type(self).__name__,
            self.num_malicious_nodes,
            self.num_nodes_to_select,
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The weighted mean of the selected replies' arrays, and their metrics."""
        held = usable_replies(replies)
        if not held:
            return None, None
        needed = 2 * self.num_malicious_nodes + 3
        if len(held) < needed:
            log.warning(
                "[ROUND %d] %s: %d replies, fewer than the %d (2 * num_malicious_nodes + 3) its "
                "guarantee needs; selecting anyway",
                server_round,
                type(self).__name__,
                len(held),
                needed,
            )
        records = reply_arrays(held, self.arrayrecord_key)
        chosen = krum_order(compute_distances(records), self.num_malicious_nodes)
        chosen = chosen[: self.num_nodes_to_select]
        log.info(
            "[ROUND %d] %s selected the replies of nodes %s",
            server_round,
            type(self).__name__,
            [held[i].metadata.src_node_id for i in chosen],
        )
        selected = [held[i] for i in chosen]
        return weighted_mean(selected, self.arrayrecord_key, self.weighted_by_key), train_metrics(
            self, selected
        )


def compute_distances(records: list[ArrayRecord]) -> npt.NDArray[Any]:
    """The matrix of squared L2 distances between ``records`` (all arrays of each taken as
    one vector; complex values count their real and imaginary parts as two coordinates).

    Differences are taken directly (in float64) rather than through norms and dot products,
    so near-identical updates get exact small distances and far outliers give large (or
    infinite) ones, never NaN.
    """
    count = len(records)
    distances = np.zeros((count, count))
    if count == 0:
        return distances
    layout = layout_of(records[0])
    for record in records[1:]:
        check_layout(record, layout)
    with np.errstate(over="ignore"):  # a far outlier's distance may overflow to inf
        for key in layout:
            flat = _real_rows(np.stack([record[key].view() for record in records]))
            for i in range(count - 1):
                diff = flat[i + 1 :] - flat[i]
                row = np.einsum("ij,ij->i", diff, diff)
                distances[i, i + 1 :] += row
                distances[i + 1 :, i] += row
    return distances


def _real_rows(stack: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``stack`` (one array per record) as rows of real coordinates, float64 at least."""
    rows = stack.reshape(len(stack), -1)
    if rows.dtype.kind == "c":
        rows = np.concatenate([rows.real, rows.imag], axis=1)
    return rows.astype(np.result_type(rows.dtype, np.float64), copy=False)


def krum_scores(distances: npt.NDArray[Any], num_malicious_nodes: int) -> npt.NDArray[Any]:
    """Each record's Krum score: the sum of its ``max(1, n - f - 2)`` smallest distances to
    the other records (fewer if there are fewer others)."""
    count = len(distances)
    closest = max(1, count - num_malicious_nodes - 2)
    scores = np.zeros(count)
    for i in range(count):
        others = np.delete(distances[i], i)
        scores[i] = np.sort(others)[:closest].sum()
    return scores


def krum_order(distances: npt.NDArray[Any], num_malicious_nodes: int) -> list[int]:
    """Indices of the records from the lowest Krum score to the highest (ties: lower index)."""
    order = np.argsort(krum_scores(distances, num_malicious_nodes), kind="stable")
    return [int(i) for i in order]


def select_multikrum(
    contents: list[RecordDict],
    num_malicious_nodes: int,
    num_nodes_to_select: int,
    *,
    arrayrecord_key: str | None = None,
) -> list[RecordDict]:
    """The ``num_nodes_to_select`` contents (reply RecordDicts) with the lowest Krum scores,
    lowest first. Their arrays are the ArrayRecord under ``arrayrecord_key`` (by default the
    first ArrayRecord of each content)."""
    records = []
    for content in contents:
        if arrayrecord_key is None:
            found = next(iter(content.array_records.values()), None)
        else:
            found = content.get(arrayrecord_key)
        if not isinstance(found, ArrayRecord):
            wanted = "an ArrayRecord" if arrayrecord_key is None else repr(arrayrecord_key)
            raise InvalidArgument(f"a reply's content has no {wanted}")
        records.append(found)
    order = krum_order(compute_distances(records), num_malicious_nodes)
    return [contents[i] for i in order[:num_nodes_to_select]]


def weighted_mean(
    replies: Sequence[Message], arrayrecord_key: str, weighted_by_key: str
) -> ArrayRecord | None:
    """The mean of the replies' arrays weighted by ``weighted_by_key`` (unweighted if every
    weight is zero), in the dtypes of the first reply's; one reply's arrays as they are."""
    records = reply_arrays(replies, arrayrecord_key)
    if len(records) == 1:  # Krum: the chosen arrays exactly, not x * w / w
        return ArrayRecord(dict(records[0].items()))
    weights = [read_weight(reply.content, weighted_by_key)[1] for reply in replies]
    if sum(weights) <= 0:
        weights = [1.0] * len(weights)
    mean = WeightedArrayMean()
    for record, weight in zip(records, weights, strict=True):
        mean.add(record, weight)
    return mean.result()
