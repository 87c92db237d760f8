"""`FedXgbCyclic`: federated XGBoost by cyclic training, one node per round in turn."""

from __future__ import annotations

import logging
from collections.abc import Iterable

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
from corolla.serverapp.strategy._nodes import wait_for_nodes
from corolla.serverapp.strategy.fedavg import FedAvg, MetricsAggrFn
from corolla.serverapp.strategy.fedmedian import reply_arrays, train_metrics, usable_replies

log = logging.getLogger(__name__)

_STATE_KEY = "fedxgb-cyclic"


class FedXgbCyclic(FedAvg):
    """Cyclic training: each round one node trains the global model further, nodes in turn.

    Nodes are numbered in the order they are first seen online (those seen together, by
    ascending id); round ``r`` trains, then evaluates, on node ``(r - 1) % N`` of the ``N``
    online, once at least ``max(min_available_nodes, 2)`` are (``timeout`` of `start`). The
    node's reply (its ArrayRecord, of any layout: a model grows) becomes the global model as
    it is, so any model can go round; for XGBoost it is the JSON model bytes in one uint8
    array. ``fraction_train`` and ``fraction_evaluate`` may only be 1.0 or 0.0 (0.0 skips
    that phase). The numbering is saved with checkpoints, so a resumed run goes on in turn.
    """

    def __init__(
        self,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_available_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: MetricsAggrFn | None = None,
        evaluate_metrics_aggr_fn: MetricsAggrFn | None = None,
    ) -> None:
        for name, value in (
            ("fraction_train", fraction_train),
            ("fraction_evaluate", fraction_evaluate),
        ):
            if value not in (0.0, 1.0):
                raise InvalidArgument(
                    f"{name} can only be 1.0 or 0.0 for FedXgbCyclic, got {value}"
                )
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=2,
            min_evaluate_nodes=2,
            min_available_nodes=min_available_nodes,
            weighted_by_key=weighted_by_key,
            arrayrecord_key=arrayrecord_key,
            configrecord_key=configrecord_key,
            train_metrics_aggr_fn=train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        )
        self.registered_nodes: dict[int, int] = {}  # node id -> its number (1, 2, ...)

    def summary(self) -> None:
        """FedAvg's settings, then the nodes' turn order."""
        super().summary()
        log.info(
            "  FedXgbCyclic: one node per round, in turn (%d nodes numbered so far)",
            len(self.registered_nodes),
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One ``train`` message, to the node whose turn it is."""
        if self.fraction_train == 0.0:
            return []
        return self._message(MessageType.TRAIN, server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One ``evaluate`` message, to the node whose turn it is (none if
        ``fraction_evaluate`` is 0)."""
        if self.fraction_evaluate == 0.0:
            return []
        return self._message(MessageType.EVALUATE, server_round, arrays, config, grid)

    def check_train_reply(self, reply: Message, arrays: ArrayRecord) -> str | None:
        """A train reply needs an ArrayRecord under ``arrayrecord_key`` (any layout) and a
        usable ``weighted_by_key`` metric."""
        if not isinstance(reply.content.get(self.arrayrecord_key), ArrayRecord):
            return f"the reply has no ArrayRecord {self.arrayrecord_key!r}"
        return self.check_evaluate_reply(reply)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The (first) reply's arrays as they are, and the replies' metrics."""
        held = usable_replies(replies)
        if not held:
            return None, None
        return reply_arrays(held[:1], self.arrayrecord_key)[0], train_metrics(self, held)

    def checkpoint_state(self) -> RecordDict:
        """The nodes' numbering."""
        order = sorted(self.registered_nodes, key=self.registered_nodes.__getitem__)
        if not order:
            return RecordDict()
        return RecordDict({_STATE_KEY: ConfigRecord({"registered-nodes": order})})

    def restore_checkpoint_state(self, state: RecordDict) -> None:
        """Take back the numbering `checkpoint_state` saved."""
        record = state.get(_STATE_KEY)
        if isinstance(record, ConfigRecord):
            order = record["registered-nodes"]
            if isinstance(order, list):
                self.registered_nodes = {int(n): i for i, n in enumerate(order, start=1)}

    def turn(self, server_round: int, grid: Grid) -> int:
        """The id of the node whose turn round ``server_round`` is (waits for nodes)."""
        online = wait_for_nodes(
            grid, max(self.min_available_nodes, self.min_train_nodes), self._round_timeout
        )
        number = max(self.registered_nodes.values(), default=0)
        for node_id in sorted(set(online) - set(self.registered_nodes)):
            number += 1
            self.registered_nodes[node_id] = number
        ordered = sorted(online, key=self.registered_nodes.__getitem__)
        return ordered[(server_round - 1) % len(ordered)]

    def _message(
        self,
        message_type: str,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        grid: Grid,
    ) -> list[Message]:
        node_id = self.turn(server_round, grid)
        log.info("[ROUND %d] %s: node %d's turn", server_round, message_type, node_id)
        round_config = ConfigRecord({**config, "server-round": server_round})
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: round_config})
        message = Message(
            content,
            dst_node_id=node_id,
            message_type=message_type,
            ttl=self._round_timeout,
            group_id=str(server_round),
        )
        return [message]
