"""The subclassing contract shared with Flower: hook signatures, replies as a list unless the
method folds them, ``summary()``, positional constructors and ``start``."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pytest

from corolla.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.common.errors import DeadlineExceeded, RoundFailed
from corolla.records import MessageType
from corolla.serverapp import Grid
from corolla.serverapp.strategy.fedavg import FedAvg
from corolla.serverapp.strategy.strategy import (
    DEFAULT_TIMEOUT,
    Strategy,
    folds_replies,
    is_folding,
)
from corolla.simulation import InProcessGrid

pytestmark = pytest.mark.timeout(30)


def make_app() -> ClientApp:
    """Node i returns arrays all equal to i, trained on i examples; evaluates with loss i."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        i = context.node_id
        sent = msg.content["arrays"]
        arrays = ArrayRecord(
            {k: np.full(a.shape, float(i), dtype=a.dtype) for k, a in sent.items()}
        )
        metrics = MetricRecord({"loss": float(i), "num-examples": i})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        metrics = MetricRecord({"loss": float(context.node_id), "num-examples": 1})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


ARRAYS = ArrayRecord({"w": np.zeros(3)})


# -- what aggregate_* receive ------------------------------------------------------------------


class ListChecking(FedAvg):
    """Overrides without the decorator: Flower semantics, a list of the usable replies."""

    def __init__(self) -> None:
        super().__init__(min_available_nodes=3)
        self.seen: list[tuple[str, int, list[int], list[int]]] = []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        assert isinstance(replies, list)
        first = [r.metadata.src_node_id for r in replies]
        second = [r.metadata.src_node_id for r in replies]  # a second pass sees them all again
        self.seen.append(("train", len(replies), first, second))
        return super().aggregate_train(server_round, replies)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        assert isinstance(replies, list)
        ids = [r.metadata.src_node_id for r in replies]
        self.seen.append(("evaluate", len(replies), ids, [r.metadata.src_node_id for r in replies]))
        return super().aggregate_evaluate(server_round, replies)


def test_an_undecorated_override_gets_a_list_it_can_len_and_iterate_twice() -> None:
    strategy = ListChecking()
    result = strategy.start(InProcessGrid(make_app(), num_nodes=3), ARRAYS, 2, 5)
    assert [(phase, n) for phase, n, _, _ in strategy.seen] == [
        ("train", 3),
        ("evaluate", 3),
    ] * 2
    assert all(
        sorted(first) == sorted(second) == [1, 2, 3] for _, _, first, second in strategy.seen
    )
    # super() with the list still averages: (1*1 + 2*2 + 3*3) / 6 = 14/6.
    np.testing.assert_allclose(result.arrays["w"].numpy(), np.full(3, 14 / 6))


def test_the_list_holds_only_the_usable_replies() -> None:
    app = ClientApp()
    ok = make_app()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        if context.node_id == 2:
            raise RuntimeError("out of memory")
        return ok(msg, context)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return ok(msg, context)

    strategy = ListChecking()
    strategy.start(InProcessGrid(app, num_nodes=3), ARRAYS, 1, 5)
    assert strategy.seen[0][:2] == ("train", 2)
    assert sorted(strategy.seen[0][2]) == [1, 3]


class Folding(FedAvg):
    """A decorated override: gets the one-pass iterator, as FedAvg's own methods do."""

    kinds: list[str]

    @folds_replies
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self.kinds.append(type(replies).__name__)
        assert isinstance(replies, Iterator) and not isinstance(replies, list)
        return super().aggregate_train(server_round, replies)


def test_a_decorated_override_gets_a_one_pass_iterator() -> None:
    strategy = Folding()
    strategy.kinds = []
    result = strategy.start(InProcessGrid(make_app(), num_nodes=2), ARRAYS, 1, 5)
    assert strategy.kinds == ["generator"]
    np.testing.assert_allclose(result.arrays["w"].numpy(), np.full(3, 5 / 3))  # (1 + 4) / 3


def test_fedavg_marks_its_own_aggregate_methods_only() -> None:
    assert is_folding(FedAvg.aggregate_train) and is_folding(FedAvg().aggregate_evaluate)
    assert not is_folding(ListChecking.aggregate_train)
    assert is_folding(Folding().aggregate_train)


def test_too_few_usable_replies_still_fail_the_round_for_a_list_override() -> None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        raise ValueError("broken")

    strategy = ListChecking()
    with pytest.raises(RoundFailed, match=r"round 1 train: 0 of 3 replies usable"):
        strategy.start(InProcessGrid(app, num_nodes=3), ARRAYS, 1, 5)
    assert strategy.seen == [("train", 0, [], [])]  # it still saw the (empty) list


# -- a Flower-style subclass --------------------------------------------------------------------


class FlowerStyle(FedAvg):
    """Written as for Flower: exact hook signatures, messages built by hand, list replies."""

    def __init__(self) -> None:
        super().__init__(0.5, 0.0, 1, 0, 1)  # positional, in Flower's order
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def summary(self) -> None:
        self.calls.append(("summary", ()))
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.calls.append(("configure_train", (server_round, arrays, config, grid)))
        config["lr"] = 0.1 / server_round
        content = RecordDict({"arrays": arrays, "config": config})
        # Generator: the base class must not need a list from configure_train.
        return (
            Message(content=content, message_type=MessageType.TRAIN, dst_node_id=node_id)
            for node_id in sorted(grid.get_node_ids())[:2]
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.calls.append(("aggregate_train", (server_round, len(replies))))
        arrays = [r.content["arrays"].to_numpy_ndarrays()[0] for r in replies]
        # An unweighted mean, done by hand as a Flower user would.
        mean = sum(arrays) / len(arrays)
        metrics = MetricRecord({"replies": len(replies)})
        return ArrayRecord([mean]), metrics


def test_a_flower_style_subclass_runs_through_the_in_process_grid() -> None:
    grid = InProcessGrid(make_app(), num_nodes=4)
    strategy = FlowerStyle()
    result = strategy.start(grid, ArrayRecord([np.zeros(2)]), 2, 5, ConfigRecord({"x": 1}))
    names = [name for name, _ in strategy.calls]
    assert names == ["summary", "configure_train", "aggregate_train"] * 1 + [
        "configure_train",
        "aggregate_train",
    ]
    server_round, arrays, config, passed_grid = strategy.calls[1][1]
    assert (server_round, passed_grid) == (1, grid)
    assert isinstance(arrays, ArrayRecord) and isinstance(config, ConfigRecord)
    assert strategy.calls[2][1] == (1, 2)
    # Nodes 1 and 2 return all-1 and all-2 arrays: unweighted mean 1.5.
    np.testing.assert_allclose(result.arrays.to_numpy_ndarrays()[0], [1.5, 1.5])
    assert result.train_metrics_clientapp == {1: {"replies": 2}, 2: {"replies": 2}}
    assert result.evaluate_metrics_clientapp == {}  # fraction_evaluate 0.0 (positional)


def test_configure_hooks_are_called_with_exactly_four_positional_arguments() -> None:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    class Recording(FedAvg):
        def configure_train(self, *args: Any, **kwargs: Any) -> Iterable[Message]:
            calls.append(("train", args, kwargs))
            return super().configure_train(*args, **kwargs)

        def configure_evaluate(self, *args: Any, **kwargs: Any) -> Iterable[Message]:
            calls.append(("evaluate", args, kwargs))
            return super().configure_evaluate(*args, **kwargs)

    grid = InProcessGrid(make_app(), num_nodes=2)
    Recording().start(grid, ARRAYS, 1, 5)
    assert [(kind, len(args), kwargs) for kind, args, kwargs in calls] == [
        ("train", 4, {}),
        ("evaluate", 4, {}),
    ]
    assert [type(a).__name__ for a in calls[0][1]] == [
        "int",
        "ArrayRecord",
        "ConfigRecord",
        "InProcessGrid",
    ]


# -- summary, start and the constructor ---------------------------------------------------------


def test_summary_is_abstract_and_logged_by_start(caplog: pytest.LogCaptureFixture) -> None:
    assert "summary" in Strategy.__abstractmethods__

    class NoSummary(Strategy):
        def configure_train(self, *a: Any) -> Iterable[Message]:
            return []

        def configure_evaluate(self, *a: Any) -> Iterable[Message]:
            return []

        def aggregate_train(self, *a: Any) -> tuple[ArrayRecord | None, MetricRecord | None]:
            return None, None

        def aggregate_evaluate(self, *a: Any) -> MetricRecord | None:
            return None

    with pytest.raises(TypeError, match="summary"):
        NoSummary()  # type: ignore[abstract]

    with caplog.at_level(logging.INFO, logger="corolla.serverapp.strategy"):
        FedAvg(fraction_train=0.5).start(InProcessGrid(make_app(), num_nodes=2), ARRAYS, 0)
    assert "sampling: fraction train 0.5, evaluate 1" in caplog.text
    assert "weighted by 'num-examples', arrays under 'arrays', config under 'config'" in (
        caplog.text
    )


def test_start_takes_flowers_parameters_positionally() -> None:
    params = inspect.signature(Strategy.start).parameters
    assert list(params) == [
        "self",
        "grid",
        "initial_arrays",
        "num_rounds",
        "timeout",
        "train_config",
        "evaluate_config",
        "evaluate_fn",
        "checkpoint",
    ]
    kinds = {name: p.kind for name, p in params.items()}
    assert all(kinds[n] is inspect.Parameter.POSITIONAL_OR_KEYWORD for n in list(params)[:-1])
    assert kinds["checkpoint"] is inspect.Parameter.KEYWORD_ONLY
    timeout = params["timeout"].default
    assert timeout == 3600 and type(timeout) is int

    seen: list[int] = []
    result = FedAvg().start(
        InProcessGrid(make_app(), num_nodes=2),
        ARRAYS,
        1,
        5,
        ConfigRecord({"lr": 0.1}),
        ConfigRecord(),
        lambda rnd, arrays: seen.append(rnd) or None,  # type: ignore[func-returns-value]
    )
    assert seen == [0, 1] and sorted(result.train_metrics_clientapp) == [1]


def test_fedavg_takes_flowers_constructor_positionally() -> None:
    def fn(records: list[RecordDict], key: str) -> MetricRecord:
        return MetricRecord()

    strategy = FedAvg(0.3, 0.4, 5, 6, 7, "n", "a", "c", fn, fn, min_usable_replies=2)
    assert (strategy.fraction_train, strategy.fraction_evaluate) == (0.3, 0.4)
    assert (strategy.min_train_nodes, strategy.min_evaluate_nodes) == (5, 6)
    assert strategy.min_available_nodes == 7
    assert (strategy.weighted_by_key, strategy.arrayrecord_key) == ("n", "a")
    assert strategy.configrecord_key == "c"
    assert strategy.train_metrics_aggr_fn is fn and strategy.evaluate_metrics_aggr_fn is fn
    assert strategy.min_usable_replies == 2
    with pytest.raises(TypeError):
        FedAvg(0.3, 0.4, 5, 6, 7, "n", "a", "c", fn, fn, 2)  # type: ignore[call-arg]


def test_the_timeout_of_start_bounds_the_wait_for_nodes() -> None:
    assert FedAvg()._round_timeout == DEFAULT_TIMEOUT == 3600
    grid = InProcessGrid(make_app(), num_nodes=2)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"waited 0\.2 s for 3 nodes"):
        FedAvg(min_available_nodes=3).start(grid, ARRAYS, 1, 0.2)
    assert time.monotonic() - started < 2


def test_messages_built_by_fedavg_live_as_long_as_the_timeout() -> None:
    strategy = FedAvg()
    grid = InProcessGrid(make_app(), num_nodes=2)
    messages = list(strategy.configure_train(1, ARRAYS, ConfigRecord(), grid))
    assert [m.metadata.ttl for m in messages] == [3600, 3600]
    strategy._round_timeout = 7.5  # what start(timeout=7.5) sets
    messages = list(strategy.configure_evaluate(1, ARRAYS, ConfigRecord(), grid))
    assert [m.metadata.ttl for m in messages] == [7.5, 7.5]


# -- 0-d parameters ------------------------------------------------------------------------------


def test_a_zero_dimensional_parameter_survives_a_fedavg_round() -> None:
    initial = ArrayRecord(
        {"w": np.zeros(2, dtype=np.float32), "scale": np.array(0.0, dtype=np.float32)}
    )
    result = FedAvg().start(InProcessGrid(make_app(), num_nodes=2), initial, 2, 5)
    scale = result.arrays["scale"].numpy()
    assert scale.shape == () and scale.dtype == np.float32
    assert float(scale) == pytest.approx(5 / 3)  # (1*1 + 2*2) / (1 + 2)
    np.testing.assert_allclose(result.arrays["w"].numpy(), [5 / 3, 5 / 3], rtol=1e-6)
