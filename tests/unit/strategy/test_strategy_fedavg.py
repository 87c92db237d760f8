"""FedAvg over in-process ClientApps: exact weighted averaging, metrics, failures, sampling."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pytest

from corolla.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.common.errors import DeadlineExceeded, InvalidArgument
from corolla.serverapp import Grid
from corolla.serverapp.strategy import (
    FedAvg,
    Result,
    WeightedArrayMean,
    aggregate_metricrecords,
)
from corolla.serverapp.strategy._nodes import wait_for_nodes
from corolla.simulation import InProcessGrid

pytestmark = pytest.mark.timeout(30)

Handler = Callable[[Message, Context], Message]


def initial_arrays() -> ArrayRecord:
    return ArrayRecord(
        {
            "w": np.zeros((2, 3), dtype=np.float32),
            "b": np.zeros(4, dtype=np.float64),
            "steps": np.zeros(1, dtype=np.int32),
        }
    )


def node_arrays(node_id: int) -> ArrayRecord:
    """What node ``i`` returns: every entry derived from ``i``, so means are easy by hand."""
    return ArrayRecord(
        {
            "w": np.full((2, 3), float(node_id), dtype=np.float32),
            "b": np.full(4, 10.0 * node_id),
            "steps": np.array([node_id], dtype=np.int32),
        }
    )


def reply_train(msg: Message, context: Context) -> Message:
    """Node i trained on i examples, with loss i and a per-class list [i, 2i]."""
    i = context.node_id
    metrics = MetricRecord({"loss": float(i), "per-class": [float(i), 2.0 * i], "num-examples": i})
    return Message(RecordDict({"arrays": node_arrays(i), "metrics": metrics}), reply_to=msg)


def reply_evaluate(msg: Message, context: Context) -> Message:
    """Node i evaluated on 10*i examples, with accuracy 0.1*i."""
    i = context.node_id
    metrics = MetricRecord({"accuracy": 0.1 * i, "num-examples": 10 * i})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def make_app(
    train: Handler = reply_train,
    evaluate: Handler = reply_evaluate,
    seen: list[tuple[str, int, RecordDict]] | None = None,
) -> ClientApp:
    """A ClientApp answering with ``train``/``evaluate``; records (type, node, content) seen."""
    app = ClientApp()

    def recording(handler: Handler) -> Handler:
        def wrapped(msg: Message, context: Context) -> Message:
            if seen is not None:
                seen.append((msg.metadata.message_type, context.node_id, msg.content))
            return handler(msg, context)

        return wrapped

    app.train()(recording(train))
    app.evaluate()(recording(evaluate))
    return app


def nodes_per_round(seen: list[tuple[str, int, RecordDict]], message_type: str) -> list[int]:
    counts: dict[int, int] = {}
    for kind, _, content in seen:
        if kind == message_type:
            server_round = int(content["config"]["server-round"])
            counts[server_round] = counts.get(server_round, 0) + 1
    return [counts[r] for r in sorted(counts)]


# -- averaging ------------------------------------------------------------------------------------


def test_weighted_average_is_exact_and_keeps_dtypes() -> None:
    grid = InProcessGrid(make_app(), num_nodes=3)  # weights 1, 2, 3
    result = FedAvg(min_available_nodes=3).start(
        grid=grid, initial_arrays=initial_arrays(), num_rounds=1, timeout=5
    )
    arrays = result.arrays
    assert list(arrays) == ["w", "b", "steps"]
    mean_i = (1 * 1 + 2 * 2 + 3 * 3) / 6  # sum(weight * value) / sum(weight)
    np.testing.assert_allclose(arrays["w"].numpy(), np.full((2, 3), mean_i), rtol=1e-6)
    np.testing.assert_allclose(arrays["b"].numpy(), np.full(4, 10 * mean_i), rtol=1e-12)
    assert arrays["steps"].numpy().tolist() == [2]  # 14/6 = 2.33, rounded back to int32
    assert [arrays[k].dtype for k in arrays] == ["float32", "float64", "int32"]


def test_weighted_array_mean_folds_one_record_at_a_time() -> None:
    mean = WeightedArrayMean()
    assert mean.result() is None
    mean.add(ArrayRecord([np.array([1.0, 2.0], dtype=np.float16)]), 3.0)
    mean.add(ArrayRecord([np.array([5.0, 6.0], dtype=np.float16)]), 1.0)
    mean.add(ArrayRecord([np.array([100.0, 100.0], dtype=np.float16)]), 0.0)
    result = mean.result()
    assert result is not None
    assert result["0"].dtype == "float16"
    assert result["0"].numpy().tolist() == [2.0, 3.0]
    assert mean.count == 3 and mean.total_weight == 4.0
    with pytest.raises(InvalidArgument, match="shape"):
        mean.add(ArrayRecord([np.zeros(3)]), 1.0)
    with pytest.raises(InvalidArgument, match="names"):
        mean.add(ArrayRecord({"other": np.zeros(2)}), 1.0)
    with pytest.raises(InvalidArgument, match="non-negative"):
        mean.add(ArrayRecord([np.zeros(2)]), -1.0)


def test_train_messages_carry_arrays_and_config_with_server_round() -> None:
    seen: list[tuple[str, int, RecordDict]] = []
    grid = InProcessGrid(make_app(seen=seen), num_nodes=2)
    FedAvg().start(
        grid=grid,
        initial_arrays=initial_arrays(),
        num_rounds=2,
        timeout=5,
        train_config=ConfigRecord({"lr": 0.5}),
        evaluate_config=ConfigRecord({"batch": 8}),
    )
    train = [content for kind, _, content in seen if kind == "train"]
    evaluate = [content for kind, _, content in seen if kind == "evaluate"]
    assert [c["config"] for c in train] == [
        {"lr": 0.5, "server-round": 1},
        {"lr": 0.5, "server-round": 1},
        {"lr": 0.5, "server-round": 2},
        {"lr": 0.5, "server-round": 2},
    ]
    assert [c["config"]["server-round"] for c in evaluate] == [1, 1, 2, 2]
    assert all(c["config"]["batch"] == 8 for c in evaluate)
    assert train[0]["arrays"] == initial_arrays()
    # Round 2 trains from round 1's aggregate, which the evaluate of round 1 also got.
    assert train[2]["arrays"] == evaluate[0]["arrays"] != initial_arrays()


def test_custom_record_keys() -> None:
    def train(msg: Message, context: Context) -> Message:
        assert msg.content["cfg"]["server-round"] == 1
        metrics = MetricRecord({"n": context.node_id})
        content = RecordDict({"model": node_arrays(context.node_id), "m": metrics})
        return Message(content, reply_to=msg)

    def evaluate(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"m": MetricRecord({"n": 1, "acc": 0.5})}), reply_to=msg)

    grid = InProcessGrid(make_app(train, evaluate), num_nodes=2)
    strategy = FedAvg(weighted_by_key="n", arrayrecord_key="model", configrecord_key="cfg")
    result = strategy.start(grid=grid, initial_arrays=initial_arrays(), num_rounds=1, timeout=5)
    np.testing.assert_allclose(result.arrays["b"].numpy(), np.full(4, 10 * 5 / 3))
    assert result.evaluate_metrics_clientapp[1] == {"acc": 0.5, "n": 2}


# -- metrics --------------------------------------------------------------------------------------


def test_metrics_are_weighted_averages() -> None:
    grid = InProcessGrid(make_app(), num_nodes=3)
    result = FedAvg(min_available_nodes=3).start(
        grid=grid, initial_arrays=initial_arrays(), num_rounds=2, timeout=5
    )
    train = result.train_metrics_clientapp
    assert sorted(train) == [1, 2]
    assert train[1]["loss"] == pytest.approx(14 / 6)
    assert train[1]["per-class"] == pytest.approx([14 / 6, 28 / 6])
    assert train[1]["num-examples"] == 6  # the weight itself is summed
    evaluate = result.evaluate_metrics_clientapp
    assert evaluate[2]["accuracy"] == pytest.approx((0.1 * 10 + 0.2 * 20 + 0.3 * 30) / 60)
    assert evaluate[2]["num-examples"] == 60


def test_aggregate_metricrecords_handles_missing_keys_lists_and_zero_weights() -> None:
    contents = [
        RecordDict({"other": MetricRecord({"x": 100.0}), "m": MetricRecord({"x": 1.0, "n": 1})}),
        RecordDict({"m": MetricRecord({"x": 4.0, "y": [1.0, 2.0], "n": 3})}),
        RecordDict({"m": MetricRecord({"x": 50.0})}),  # no weight: left out
    ]
    assert aggregate_metricrecords(contents, "n") == {"x": 3.25, "y": [1.0, 2.0], "n": 4}
    zero = [RecordDict({"m": MetricRecord({"x": float(v), "n": 0})}) for v in (1, 3)]
    assert aggregate_metricrecords(zero, "n") == {"x": 2.0, "n": 0}
    assert aggregate_metricrecords([], "n") == {}


def test_custom_metrics_aggregation_functions() -> None:
    calls: list[tuple[str, int, str]] = []

    def make_fn(name: str) -> Callable[[list[RecordDict], str], MetricRecord]:
        def fn(contents: list[RecordDict], weighted_by_key: str) -> MetricRecord:
            assert all(not c.array_records for c in contents)  # arrays were folded already
            calls.append((name, len(contents), weighted_by_key))
            return MetricRecord({f"{name}-replies": len(contents)})

        return fn

    strategy = FedAvg(
        train_metrics_aggr_fn=make_fn("train"), evaluate_metrics_aggr_fn=make_fn("evaluate")
    )
    grid = InProcessGrid(make_app(), num_nodes=2)
    result = strategy.start(grid=grid, initial_arrays=initial_arrays(), num_rounds=2, timeout=5)
    assert calls == [("train", 2, "num-examples"), ("evaluate", 2, "num-examples")] * 2
    assert result.train_metrics_clientapp == {1: {"train-replies": 2}, 2: {"train-replies": 2}}
    assert result.evaluate_metrics_clientapp[2] == {"evaluate-replies": 2}


# -- failures -------------------------------------------------------------------------------------


def test_a_failing_node_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    def train(msg: Message, context: Context) -> Message:
        if context.node_id == 2:
            raise RuntimeError("disk full on node two")
        if context.node_id == 3:  # no metrics: cannot be weighted
            return Message(RecordDict({"arrays": node_arrays(3)}), reply_to=msg)
        if context.node_id == 4:  # arrays of the wrong shape
            bad = ArrayRecord({k: np.zeros(9) for k in initial_arrays()})
            metrics = MetricRecord({"num-examples": 4})
            return Message(RecordDict({"arrays": bad, "metrics": metrics}), reply_to=msg)
        return reply_train(msg, context)

    grid = InProcessGrid(make_app(train), num_nodes=5)
    with caplog.at_level(logging.INFO, logger="corolla.serverapp.strategy"):
        result = FedAvg().start(grid=grid, initial_arrays=initial_arrays(), num_rounds=1, timeout=5)

    # Only nodes 1 and 5 count: (1*1 + 5*5) / 6.
    np.testing.assert_allclose(result.arrays["w"].numpy(), np.full((2, 3), 26 / 6), rtol=1e-6)
    assert result.train_metrics_clientapp[1]["num-examples"] == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("node 2" in w and "disk full on node two" in w for w in warnings)
    assert any("node 3" in w and "no MetricRecord with 'num-examples'" in w for w in warnings)
    assert any("node 4" in w and "shape" in w for w in warnings)
    assert "[ROUND 1] train: 2 of 5 replies ok, 3 failed" in caplog.text


def test_no_successful_train_reply_keeps_the_arrays(caplog: pytest.LogCaptureFixture) -> None:
    def train(msg: Message, context: Context) -> Message:
        raise ValueError("broken")

    grid = InProcessGrid(make_app(train), num_nodes=2)
    with caplog.at_level(logging.WARNING, logger="corolla.serverapp.strategy"):
        result = FedAvg(min_usable_replies=0).start(
            grid=grid, initial_arrays=initial_arrays(), num_rounds=2, timeout=5
        )
    assert result.arrays == initial_arrays()
    assert result.train_metrics_clientapp == {}
    assert sorted(result.evaluate_metrics_clientapp) == [1, 2]  # evaluation still ran
    assert "keeping the previous arrays" in caplog.text


class SilentNodeGrid(InProcessGrid):
    """Node ``silent`` never answers."""

    silent = 2

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        replies = super().pull_messages(message_ids)
        return [r for r in replies if r.metadata.src_node_id != self.silent]


def test_a_node_that_does_not_reply_in_time_counts_as_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    grid = SilentNodeGrid(make_app(), num_nodes=3)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="corolla.serverapp.strategy"):
        result = FedAvg(fraction_evaluate=0.0).start(
            grid=grid, initial_arrays=initial_arrays(), num_rounds=1, timeout=0.3
        )
    assert time.monotonic() - started < 3
    np.testing.assert_allclose(result.arrays["b"].numpy(), np.full(4, 10 * 10 / 4))
    assert "node 2: no reply before the round's timeout" in caplog.text
    assert "2 of 3 replies ok, 1 failed" in caplog.text


# -- sampling and waiting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fraction", "min_nodes", "expected"),
    [(1.0, 2, 10), (0.3, 2, 3), (0.1, 2, 2), (0.0, 4, 4), (0.55, 0, 5)],
)
def test_sampling_respects_fraction_and_minimum(
    fraction: float, min_nodes: int, expected: int
) -> None:
    seen: list[tuple[str, int, RecordDict]] = []
    grid = InProcessGrid(make_app(seen=seen), num_nodes=10)
    strategy = FedAvg(
        fraction_train=fraction,
        min_train_nodes=min_nodes,
        fraction_evaluate=fraction,
        min_evaluate_nodes=min_nodes,
    )
    strategy.start(grid=grid, initial_arrays=initial_arrays(), num_rounds=3, timeout=5)
    assert nodes_per_round(seen, "train") == [expected] * 3
    # fraction_evaluate == 0 switches client evaluation off, whatever min_evaluate_nodes says.
    assert nodes_per_round(seen, "evaluate") == ([expected] * 3 if fraction > 0 else [])
    # Each round sampled distinct nodes.
    for server_round in (1, 2, 3):
        nodes = [
            node
            for kind, node, content in seen
            if kind == "train" and content["config"]["server-round"] == server_round
        ]
        assert len(set(nodes)) == len(nodes)


def test_sampling_is_random_across_rounds() -> None:
    seen: list[tuple[str, int, RecordDict]] = []
    grid = InProcessGrid(make_app(seen=seen), num_nodes=10)
    FedAvg(fraction_train=0.2, fraction_evaluate=0.0).start(
        grid=grid, initial_arrays=initial_arrays(), num_rounds=8, timeout=5
    )
    assert len({node for kind, node, _ in seen if kind == "train"}) > 2


def test_fraction_evaluate_zero_skips_client_evaluation() -> None:
    seen: list[tuple[str, int, RecordDict]] = []
    grid = InProcessGrid(make_app(seen=seen), num_nodes=2)
    result = FedAvg(fraction_evaluate=0.0).start(
        grid=grid, initial_arrays=initial_arrays(), num_rounds=2, timeout=5
    )
    assert {kind for kind, _, _ in seen} == {"train"}
    assert result.evaluate_metrics_clientapp == {}


def test_too_few_nodes_raises_deadline_exceeded_quickly() -> None:
    grid = InProcessGrid(make_app(), num_nodes=2)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="3 nodes"):
        FedAvg(min_available_nodes=3).start(
            grid=grid, initial_arrays=initial_arrays(), num_rounds=1, timeout=0.2
        )
    assert time.monotonic() - started < 2


class GrowingGrid(InProcessGrid):
    """One more node comes online each time the node list is read."""

    def __init__(self, num_nodes: int) -> None:
        super().__init__(make_app(), num_nodes=num_nodes)
        self.online = 0

    def get_node_ids(self) -> list[int]:
        self.online = min(self.online + 1, len(super().get_node_ids()))
        return super().get_node_ids()[: self.online]


def test_wait_for_nodes_polls_until_enough_are_online() -> None:
    now = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    grid = GrowingGrid(num_nodes=5)
    assert wait_for_nodes(grid, 4, timeout=60, clock=lambda: now[0], sleep=sleep) == [1, 2, 3, 4]
    assert len(pauses) == 3 and all(0 < p <= 1.0 for p in pauses)

    grid = GrowingGrid(num_nodes=5)
    with pytest.raises(DeadlineExceeded, match="only 5 did"):
        wait_for_nodes(grid, 6, timeout=30, clock=lambda: now[0], sleep=sleep)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fraction_train": 1.5},
        {"fraction_evaluate": -0.1},
        {"min_train_nodes": -1},
        {"min_available_nodes": -2},
        {"min_usable_replies": -1},
        {"min_usable_fraction": 1.5},
    ],
)
def test_invalid_arguments_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        FedAvg(**kwargs)


def test_invalid_start_arguments_are_refused() -> None:
    grid = InProcessGrid(make_app(), num_nodes=2)
    with pytest.raises(InvalidArgument, match="timeout"):
        FedAvg().start(grid=grid, initial_arrays=initial_arrays(), timeout=0)
    with pytest.raises(InvalidArgument, match="num_rounds"):
        FedAvg().start(grid=grid, initial_arrays=initial_arrays(), num_rounds=-1)


# -- evaluate_fn and Result -----------------------------------------------------------------------


def test_evaluate_fn_runs_each_round_including_round_zero() -> None:
    calls: list[tuple[int, ArrayRecord]] = []

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        calls.append((server_round, arrays))
        if server_round == 2:
            return None  # nothing to record this round
        return MetricRecord({"b-mean": float(arrays["b"].numpy().mean())})

    grid = InProcessGrid(make_app(), num_nodes=2)
    result = FedAvg().start(
        grid=grid, initial_arrays=initial_arrays(), num_rounds=3, evaluate_fn=evaluate_fn
    )
    assert [r for r, _ in calls] == [0, 1, 2, 3]
    assert calls[0][1] == initial_arrays()
    assert calls[-1][1] == result.arrays
    assert sorted(result.evaluate_metrics_serverapp) == [0, 1, 3]
    assert result.evaluate_metrics_serverapp[0] == {"b-mean": 0.0}
    assert result.evaluate_metrics_serverapp[1]["b-mean"] == pytest.approx(10 * 5 / 3)


def test_result_holds_every_round_and_prints_readably() -> None:
    grid = InProcessGrid(make_app(), num_nodes=2)
    result = FedAvg().start(
        grid=grid,
        initial_arrays=initial_arrays(),
        num_rounds=2,
        evaluate_fn=lambda r, a: MetricRecord({"round": r}),
    )
    assert isinstance(result, Result)
    assert sorted(result.train_metrics_clientapp) == [1, 2]
    assert sorted(result.evaluate_metrics_clientapp) == [1, 2]
    assert sorted(result.evaluate_metrics_serverapp) == [0, 1, 2]
    text = repr(result)
    assert "3 arrays, 11 parameters" in text
    assert "round 2: loss=1.667, per-class=[1.667, 3.333], num-examples=3" in text
    assert "ServerApp evaluate metrics:\n    round 0: round=0" in text
    assert "none" in repr(Result())


def test_zero_rounds_returns_the_initial_arrays() -> None:
    grid = InProcessGrid(make_app(), num_nodes=2)
    result = FedAvg().start(grid=grid, initial_arrays=initial_arrays(), num_rounds=0)
    assert result.arrays == initial_arrays()
    assert result.train_metrics_clientapp == {}


def test_aggregate_train_takes_a_one_pass_iterator() -> None:
    """Replies are folded as they arrive: the hook takes an iterator, not a list."""
    grid: Grid = InProcessGrid(make_app(), num_nodes=3)
    strategy = FedAvg()
    messages = strategy.configure_train(1, initial_arrays(), ConfigRecord(), grid)
    ids = grid.push_messages(messages)
    consumed: list[int] = []

    def arriving() -> Iterator[Message]:
        for reply in grid.receive(ids, timeout=5):
            consumed.append(reply.metadata.src_node_id)
            yield reply

    arrays, metrics = strategy.aggregate_train(1, arriving())
    assert sorted(consumed) == [1, 2, 3]
    assert arrays is not None and metrics is not None
    assert metrics["num-examples"] == 6
