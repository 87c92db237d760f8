"""`FedAvg`: federated averaging over the Message API, folding replies as they arrive."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Iterator

from corolla.common.errors import InvalidArgument
from corolla.records import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from corolla.serverapp.grid import Grid
from corolla.serverapp.strategy._nodes import sample_nodes
from corolla.serverapp.strategy.aggregate import (
    WeightedArrayMean,
    aggregate_metricrecords,
    check_layout,
    layout_of,
    read_weight,
)
from corolla.serverapp.strategy.strategy import Strategy, check_tolerance, folds_replies

log = logging.getLogger(__name__)

MetricsAggrFn = Callable[[list[RecordDict], str], MetricRecord]


class FedAvg(Strategy):
    """Federated averaging: each round, train on sampled nodes and average what they return.

    A round (see `Strategy.start`) sends ``train`` messages holding the arrays (under
    ``arrayrecord_key``) and a config (under ``configrecord_key``, with ``server-round`` added)
    to a random sample of ``max(min_train_nodes, int(fraction_train * online))`` nodes, once at
    least ``max(min_available_nodes, min_train_nodes)`` are online. It averages the returned
    arrays weighted by the ``weighted_by_key`` metric of each reply, then sends ``evaluate``
    messages likewise (unless ``fraction_evaluate`` is 0) and averages the returned metrics.
    Replies that carry an error or lack the expected records are logged and skipped; the round
    goes on without them as long as each phase has at least
    ``max(min_usable_replies, ceil(min_usable_fraction * sent))`` usable replies (default: one),
    else the run ends with `RoundFailed` (see `Strategy`).

    ``rng`` (a `random.Random`) draws the samples; seed it for reproducible sampling.
    Subclasses can override any hook: ``configure_*``, ``check_*_reply``, ``aggregate_*``
    and ``summary``. FedAvg's own ``aggregate_*`` fold the replies as they arrive (see
    `folds_replies`); an override receives a list, and may pass it on to ``super()``.
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
        *,
        min_usable_replies: int = 1,
        min_usable_fraction: float = 0.0,
    ) -> None:
        _check_fraction("fraction_train", fraction_train)
        _check_fraction("fraction_evaluate", fraction_evaluate)
        _check_count("min_train_nodes", min_train_nodes)
        _check_count("min_evaluate_nodes", min_evaluate_nodes)
        _check_count("min_available_nodes", min_available_nodes)
        check_tolerance(min_usable_replies, min_usable_fraction)
        self.fraction_train = fraction_train
        self.fraction_evaluate = fraction_evaluate
        self.min_train_nodes = min_train_nodes
        self.min_evaluate_nodes = min_evaluate_nodes
        self.min_available_nodes = min_available_nodes
        self.weighted_by_key = weighted_by_key
        self.arrayrecord_key = arrayrecord_key
        self.configrecord_key = configrecord_key
        self.train_metrics_aggr_fn = train_metrics_aggr_fn or aggregate_metricrecords
        self.evaluate_metrics_aggr_fn = evaluate_metrics_aggr_fn or aggregate_metricrecords
        self.min_usable_replies = min_usable_replies
        self.min_usable_fraction = min_usable_fraction
        self.rng = random.Random()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(fraction_train={self.fraction_train}, "
            f"fraction_evaluate={self.fraction_evaluate}, min_train_nodes={self.min_train_nodes}, "
            f"min_evaluate_nodes={self.min_evaluate_nodes}, "
            f"min_available_nodes={self.min_available_nodes}, "
            f"weighted_by_key={self.weighted_by_key!r}, "
            f"min_usable_replies={self.min_usable_replies}, "
            f"min_usable_fraction={self.min_usable_fraction})"
        )

    def summary(self) -> None:
        """Log the sampling settings, the record keys and the reply tolerance."""
        log.info(
            "  sampling: fraction train %g, evaluate %g; at least %d train and %d evaluate "
            "nodes of %d available",
            self.fraction_train,
            self.fraction_evaluate,
            self.min_train_nodes,
            self.min_evaluate_nodes,
            self.min_available_nodes,
        )
        log.info(
            "  records: weighted by %r, arrays under %r, config under %r",
            self.weighted_by_key,
            self.arrayrecord_key,
            self.configrecord_key,
        )
        log.info(
            "  tolerance: at least %d usable replies and %g of those sent",
            self.min_usable_replies,
            self.min_usable_fraction,
        )

    # -- hooks -----------------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The ``train`` messages of a round, one per sampled node."""
        return self._sampled_messages(
            MessageType.TRAIN,
            self.fraction_train,
            self.min_train_nodes,
            server_round,
            arrays,
            config,
            grid,
        )

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The ``evaluate`` messages of a round (none if ``fraction_evaluate`` is 0)."""
        if self.fraction_evaluate == 0:
            return []
        return self._sampled_messages(
            MessageType.EVALUATE,
            self.fraction_evaluate,
            self.min_evaluate_nodes,
            server_round,
            arrays,
            config,
            grid,
        )

    def _sampled_messages(
        self,
        message_type: str,
        fraction: float,
        min_nodes: int,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        grid: Grid,
    ) -> list[Message]:
        timeout = self._round_timeout  # the timeout of the running `start`
        node_ids, online = sample_nodes(
            grid,
            fraction=fraction,
            min_nodes=min_nodes,
            min_available_nodes=self.min_available_nodes,
            timeout=timeout,
            rng=self.rng,
        )
        log.info(
            "[ROUND %d] %s: sampled %d of %d nodes",
            server_round,
            message_type,
            len(node_ids),
            online,
        )
        return self._messages(message_type, server_round, arrays, config, node_ids, timeout)

    def check_train_reply(self, reply: Message, arrays: ArrayRecord) -> str | None:
        """A train reply needs arrays under ``arrayrecord_key`` laid out like ``arrays`` (the
        ones sent) and a usable ``weighted_by_key`` metric."""
        received = reply.content.get(self.arrayrecord_key)
        if not isinstance(received, ArrayRecord):
            return f"the reply has no ArrayRecord {self.arrayrecord_key!r}"
        try:
            check_layout(received, layout_of(arrays))
        except InvalidArgument as exc:
            return f"arrays do not match the model sent: {exc}"
        return self.check_evaluate_reply(reply)

    def check_evaluate_reply(self, reply: Message) -> str | None:
        """A reply needs a `MetricRecord` with a non-negative ``weighted_by_key`` entry."""
        try:
            read_weight(reply.content, self.weighted_by_key)
        except InvalidArgument as exc:
            return f"invalid reply: {exc}"
        return None

    @folds_replies
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The weighted mean of the replies' arrays and their aggregated metrics.

        ``replies`` are folded one by one (as they arrive, in a run), so only the running sum
        stays in memory; ``train_metrics_aggr_fn`` gets the replies' contents without their
        ArrayRecords. Each reply must have passed `check_train_reply`.
        """
        mean = WeightedArrayMean()
        contents: list[RecordDict] = []
        for reply in skip_error_replies(replies):
            _, weight = read_weight(reply.content, self.weighted_by_key)
            mean.add(reply.content[self.arrayrecord_key], weight)
            contents.append(without_arrays(reply.content))
        if not contents:
            return None, None
        return mean.result(), self.train_metrics_aggr_fn(contents, self.weighted_by_key)

    @folds_replies
    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """The replies' metrics, aggregated by ``evaluate_metrics_aggr_fn``."""
        contents = [without_arrays(reply.content) for reply in skip_error_replies(replies)]
        if not contents:
            return None
        return self.evaluate_metrics_aggr_fn(contents, self.weighted_by_key)

    def _messages(
        self,
        message_type: str,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        node_ids: list[int],
        ttl: float,
    ) -> list[Message]:
        round_config = ConfigRecord({**config, "server-round": server_round})
        return [
            Message(
                RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: round_config}),
                dst_node_id=node_id,
                message_type=message_type,
                ttl=ttl,
                group_id=str(server_round),
            )
            for node_id in node_ids
        ]


def skip_error_replies(replies: Iterable[Message]) -> Iterator[Message]:
    """``replies`` but those carrying an error (`Strategy.start` has left them out already;
    replies gathered by other means may still have them)."""
    for reply in replies:
        if reply.has_error():
            log.warning(
                "Skipping the error reply of node %d: %s",
                reply.metadata.src_node_id,
                reply.error.reason,
            )
            continue
        yield reply


def without_arrays(content: RecordDict) -> RecordDict:
    """``content`` without its ArrayRecords (what the metrics aggregation functions get)."""
    return RecordDict({k: v for k, v in content.items() if not isinstance(v, ArrayRecord)})


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise InvalidArgument(f"{name} must be between 0 and 1, got {value}")


def _check_count(name: str, value: int) -> None:
    if value < 0:
        raise InvalidArgument(f"{name} must not be negative, got {value}")
