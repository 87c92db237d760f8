"""Order-statistic strategies (FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan) against their
published formulas on hand-computed cases, one property each, and one run each in process."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corolla.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.common.errors import InvalidArgument
from corolla.records import Error, MessageType
from corolla.serverapp.strategy.bulyan import Bulyan, aggregate_n_closest_weights
from corolla.serverapp.strategy.fedavg import FedAvg
from corolla.serverapp.strategy.fedmedian import FedMedian
from corolla.serverapp.strategy.fedtrimmedavg import FedTrimmedAvg, trim_mean
from corolla.serverapp.strategy.krum import Krum
from corolla.serverapp.strategy.multikrum import (
    MultiKrum,
    compute_distances,
    krum_scores,
    select_multikrum,
)
from corolla.simulation import InProcessGrid

pytestmark = pytest.mark.timeout(60)


def reply(node_id: int, arrays: Any, weight: float = 1, **metrics: float) -> Message:
    """A train reply from ``node_id`` holding ``arrays``, weighted ``weight``."""
    sent = Message(RecordDict(), dst_node_id=node_id, message_type=MessageType.TRAIN)
    record = MetricRecord({"num-examples": weight, "loss": float(node_id), **metrics})
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": record}), reply_to=sent)


def replies_of(values: Sequence[Any], make: Callable[[Any], Any]) -> list[Message]:
    """One reply per value, from nodes 1, 2, ...; ``make(value)`` builds its arrays."""
    return [reply(i, make(v)) for i, v in enumerate(values, start=1)]


def aggregate(strategy: FedAvg, replies: list[Message]) -> tuple[ArrayRecord, MetricRecord]:
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    return arrays, metrics


def assert_within(result: Any, honest: list[list[float]]) -> None:
    """Each coordinate of ``result`` lies between the least and the greatest honest value
    (up to the rounding of a mean of three: a relative 1e-12)."""
    low, high = np.min(honest, axis=0), np.max(honest, axis=0)
    slack = 1e-12 * np.maximum(np.abs(low), np.abs(high))
    assert np.all(result >= low - slack) and np.all(result <= high + slack), (result, honest)


# -- FedMedian -------------------------------------------------------------------------------------


def test_median_is_coordinatewise_and_keeps_shapes_and_dtypes() -> None:
    values = [1, 2, 100, 3, 4]  # sorted 1, 2, 3, 4, 100: the median is 3
    replies = [
        reply(
            i,
            {
                "w": np.array([[v, -v], [10 * v, 0]], dtype=np.float32),
                "scalar": np.array(v, dtype=np.int32),  # 0-d
                "c": np.array([v + 1j * (50 - v)], dtype=np.complex64),
                "flag": np.array([v % 2 == 0]),  # bools 0, 1, 1, 0, 1: median 1
                "empty": np.zeros((0, 3)),
            },
            weight=i,
        )
        for i, v in enumerate(values, start=1)
    ]
    arrays, metrics = aggregate(FedMedian(), replies)
    assert list(arrays) == ["w", "scalar", "c", "flag", "empty"]
    # -v: median of -1, -2, -100, -3, -4 is -3; 10v: 30; the zeros stay 0.
    assert arrays["w"].numpy().tolist() == [[3.0, -3.0], [30.0, 0.0]]
    assert arrays["scalar"].numpy().shape == () and int(arrays["scalar"].numpy()) == 3
    # Real and imaginary parts apart: median of 49, 48, -50, 47, 46 is 47.
    assert arrays["c"].numpy().tolist() == [3 + 47j]
    assert arrays["flag"].numpy().tolist() == [True]
    assert arrays["empty"].shape == (0, 3)
    assert [arrays[k].dtype for k in arrays] == ["float32", "int32", "complex64", "bool", "float64"]
    # Metrics as FedAvg: loss i weighted by i: (1 + 4 + 9 + 16 + 25) / 15.
    assert metrics["loss"] == pytest.approx(55 / 15)
    assert metrics["num-examples"] == 15


def test_median_of_an_even_number_is_the_mean_of_the_middle_two() -> None:
    replies = replies_of([1.0, 2.0, 3.0, 100.0], lambda v: [np.array([v])])
    arrays, _ = aggregate(FedMedian(), replies)
    assert arrays["0"].numpy().tolist() == [2.5]  # (2 + 3) / 2


def test_median_ignores_errors_and_the_arrival_order() -> None:
    replies = replies_of([5.0, 1.0, 4.0], lambda v: [np.array([v])])
    sent = Message(RecordDict(), dst_node_id=9, message_type=MessageType.TRAIN)
    failed = Message(error=Error(code=1, reason="boom"), reply_to=sent)
    arrays, metrics = aggregate(FedMedian(), [replies[2], failed, replies[0], replies[1]])
    assert arrays["0"].numpy().tolist() == [4.0]  # median of 5, 1, 4
    assert metrics["num-examples"] == 3
    assert FedMedian().aggregate_train(1, []) == (None, None)


def test_median_refuses_non_finite_replies() -> None:
    sent = ArrayRecord([np.zeros(2)])
    bad = reply(1, [np.array([1.0, np.nan])])
    assert FedMedian().check_train_reply(bad, sent) == "array '0' holds NaN or infinite values"
    assert FedMedian().check_train_reply(reply(1, [np.array([1.0, 2.0])]), sent) is None
    wrong = reply(1, [np.zeros(3)])
    reason = FedMedian().check_train_reply(wrong, sent)
    assert reason is not None and "shape" in reason  # FedAvg's checks still apply


@settings(max_examples=60, deadline=None)
@given(
    honest=st.lists(st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3), min_size=4, max_size=4),
    corrupted=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=3, max_size=3),
    position=st.integers(0, 4),
)
def test_median_ignores_one_corrupted_reply_of_five(
    honest: list[list[float]], corrupted: list[float], position: int
) -> None:
    rows = [*honest]
    rows.insert(position, corrupted)
    arrays, _ = aggregate(FedMedian(), replies_of(rows, lambda row: [np.array(row)]))
    # Of five values, the middle one is between the 2nd and 3rd of the four honest ones.
    result = arrays["0"].numpy()
    assert np.all(result >= np.min(honest, axis=0)) and np.all(result <= np.max(honest, axis=0))


# -- FedTrimmedAvg ---------------------------------------------------------------------------------


def test_trimmed_mean_cuts_each_coordinate_apart() -> None:
    # Coordinate 0: 1, 2, 100, 3, 4 -> beta 0.2 of 5 cuts int(1.0) = 1 from each end:
    # 1 and 100 go, mean(2, 3, 4) = 3. Coordinate 1: 10, -50, 20, 30, 40 -> -50 and 40 go,
    # mean(10, 20, 30) = 20. A different node is cut in each coordinate.
    rows = [(1, 10), (2, -50), (100, 20), (3, 30), (4, 40)]
    replies = replies_of(rows, lambda row: {"x": np.array(row, dtype=np.float32)})
    arrays, metrics = aggregate(FedTrimmedAvg(), replies)
    assert arrays["x"].numpy().tolist() == [3.0, 20.0]
    assert arrays["x"].dtype == "float32"
    assert metrics["loss"] == pytest.approx(3.0)  # metrics from all replies: mean of 1..5


@pytest.mark.parametrize(
    ("beta", "values", "expected"),
    [
        (0.0, [1, 2, 3, 100], 26.5),  # nothing cut: (1 + 2 + 3 + 100) / 4
        (0.2, [1, 2, 3, 100], 26.5),  # int(0.8) = 0 cut
        (0.25, [1, 2, 3, 100], 2.5),  # int(1.0) = 1 cut: mean(2, 3)
        (0.4, [1, 2, 100, 3, 4], 3.0),  # int(2.0) = 2 cut: only the median is left
        (0.5, [1, 2, 100, 3, 4], 3.0),  # int(2.5) = 2 cut
    ],
)
def test_trimmed_mean_cut_counts(beta: float, values: list[int], expected: float) -> None:
    replies = replies_of(values, lambda v: [np.array(float(v))])  # 0-d arrays
    arrays, _ = aggregate(FedTrimmedAvg(beta=beta), replies)
    assert arrays["0"].numpy().shape == ()
    assert float(arrays["0"].numpy()) == pytest.approx(expected)


def test_trimmed_mean_that_would_cut_everything_keeps_the_previous_arrays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    replies = replies_of([1.0, 2.0, 3.0, 4.0], lambda v: [np.array([v])])
    with caplog.at_level(logging.WARNING):
        assert FedTrimmedAvg(beta=0.5).aggregate_train(7, replies) == (None, None)
    assert "beta 0.5 cuts 2 of 4 replies from each end, leaving none" in caplog.text
    with pytest.raises(InvalidArgument, match="leaves none"):
        trim_mean(np.zeros((4, 2)), 0.5)
    with pytest.raises(InvalidArgument, match=r"beta must be between 0 and 0\.5"):
        FedTrimmedAvg(beta=0.6)


@settings(max_examples=60, deadline=None)
@given(
    honest=st.lists(st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3), min_size=4, max_size=4),
    corrupted=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=3, max_size=3),
    position=st.integers(0, 4),
)
def test_trimmed_mean_stays_in_the_honest_range(
    honest: list[list[float]], corrupted: list[float], position: int
) -> None:
    rows = [*honest]
    rows.insert(position, corrupted)
    arrays, _ = aggregate(FedTrimmedAvg(beta=0.2), replies_of(rows, lambda r: [np.array(r)]))
    # The minimum and maximum are cut: a kept corrupted value lies between honest ones.
    result = arrays["0"].numpy()
    low, high = np.min(honest, axis=0), np.max(honest, axis=0)
    assert np.all(result >= low - 1e-9 * np.abs(low)) and np.all(
        result <= high + 1e-9 * np.abs(high)
    )


# -- Krum and MultiKrum ----------------------------------------------------------------------------

# Points a..e on nodes 1..5, split over a 0-d array "x" and a 1-element array "y".
POINTS = [(0.0, 0.0), (2.0, 0.0), (0.0, 1.0), (1.0, 1.0), (10.0, 10.0)]
# Squared distances:  a-b 4, a-c 1, a-d 2, a-e 200, b-c 5, b-d 2, b-e 164, c-d 1, c-e 181,
# d-e 162. With n = 5 and f = 1 a score sums the n - f - 2 = 2 smallest distances to others:
# a: 1 + 2 = 3, b: 2 + 4 = 6, c: 1 + 1 = 2, d: 1 + 2 = 3, e: 162 + 164 = 326.
DISTANCES = [
    [0, 4, 1, 2, 200],
    [4, 0, 5, 2, 164],
    [1, 5, 0, 1, 181],
    [2, 2, 1, 0, 162],
    [200, 164, 181, 162, 0],
]
SCORES = [3, 6, 2, 3, 326]


def point_replies() -> list[Message]:
    return [
        reply(
            i, {"x": np.array(x), "y": np.array([y], dtype=np.float32)}, weight=2 if i == 3 else 1
        )
        for i, (x, y) in enumerate(POINTS, start=1)
    ]


def test_distances_and_scores_are_krums() -> None:
    records = [r.content["arrays"] for r in point_replies()]
    assert compute_distances(records).tolist() == DISTANCES
    assert krum_scores(np.array(DISTANCES, dtype=float), 1).tolist() == SCORES


def test_krum_keeps_the_lowest_score_exactly() -> None:
    arrays, metrics = aggregate(Krum(num_malicious_nodes=1), point_replies())
    assert arrays == point_replies()[2].content["arrays"]  # c, score 2
    assert metrics["loss"] == 3.0 and metrics["num-examples"] == 2  # node 3's own metrics


def test_multikrum_averages_the_lowest_scores_weighted() -> None:
    strategy = MultiKrum(num_malicious_nodes=1, num_nodes_to_select=3)
    arrays, metrics = aggregate(strategy, point_replies())
    # c (2), then a and d (3 each; the lower node id first): weights 2, 1, 1.
    # x: (2 * 0 + 0 + 1) / 4 = 0.25; y: (2 * 1 + 0 + 1) / 4 = 0.75.
    assert float(arrays["x"].numpy()) == 0.25
    assert arrays["y"].numpy().tolist() == [0.75]
    assert metrics["loss"] == (2 * 3 + 1 + 4) / 4  # the selected nodes' losses, weighted
    contents = [r.content for r in point_replies()]
    assert select_multikrum(contents, 1, 3) == [contents[2], contents[0], contents[3]]


def test_krum_with_too_few_replies_for_its_bound_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        arrays, _ = aggregate(Krum(num_malicious_nodes=1), point_replies()[:4])
    assert "4 replies, fewer than the 5 (2 * num_malicious_nodes + 3)" in caplog.text
    # n = 4, f = 1: one nearest other. a: 1, b: 2, c: 1, d: 1 -> a (the lowest node id).
    assert arrays == point_replies()[0].content["arrays"]
    with pytest.raises(InvalidArgument):
        MultiKrum(num_nodes_to_select=0)
    with pytest.raises(InvalidArgument):
        Krum(num_malicious_nodes=-1)


@settings(max_examples=60, deadline=None)
@given(
    honest=st.lists(st.floats(-1e6, 1e6), min_size=4, max_size=4),
    shift=st.lists(st.floats(-1e12, 1e12).filter(lambda d: abs(d) > 1e-3), min_size=4, max_size=4),
    position=st.integers(0, 4),
)
def test_krum_never_selects_an_outlier(
    honest: list[float], shift: list[float], position: int
) -> None:
    rows = [honest] * 4
    rows.insert(position, [h + d for h, d in zip(honest, shift, strict=True)])
    replies = replies_of(rows, lambda row: [np.array(row).reshape(2, 2)])
    arrays, _ = aggregate(Krum(num_malicious_nodes=1), replies)
    # Each honest update has 2 identical neighbours (score 0); the outlier's score is > 0.
    assert arrays["0"].numpy().tolist() == np.array(honest).reshape(2, 2).tolist()


# -- Bulyan ----------------------------------------------------------------------------------------

# Values on nodes 1..7; n = 7, f = 1: theta = 5 selected, beta = 3 averaged per coordinate.
# Krum scores (sum of the n - f - 2 = 4 smallest squared distances to the others):
#   0: 4 + 9 + 20.25 + 25 = 58.25     2: 1 + 4 + 6.25 + 9 = 20.25    3: 1 + 2.25 + 4 + 9 = 16.25
#   4.5: 0.25 + 2.25 + 6.25 + 20.25 = 29    5: 0.25 + 4 + 9 + 16 = 29.25
#   9: 16 + 20.25 + 36 + 49 = 121.25   100: 8281 + 9025 + 9120.25 + 9409 = 35835.25
# Selected: 3, 2, 4.5, 5, 0 (nodes 3, 2, 4, 5, 1). Their median is 3; the three nearest it
# are 3 (0), 2 (1), 4.5 (1.5): (3 + 2 + 4.5) / 3 = 9.5 / 3.
BULYAN_VALUES = [0.0, 2.0, 3.0, 4.5, 5.0, 9.0, 100.0]


def bulyan_replies() -> list[Message]:
    # "w" repeats the value in 2 coordinates: every distance triples, the selection stays.
    return replies_of(
        BULYAN_VALUES, lambda v: {"v": np.array(v), "w": np.full(2, v, dtype=np.float32)}
    )


def test_bulyan_averages_the_selected_values_nearest_the_median() -> None:
    arrays, metrics = aggregate(Bulyan(num_malicious_nodes=1), bulyan_replies())
    assert float(arrays["v"].numpy()) == pytest.approx(9.5 / 3)
    assert arrays["w"].numpy() == pytest.approx([9.5 / 3] * 2)
    assert arrays["w"].dtype == "float32"
    assert metrics["loss"] == 3.0  # the selected nodes 1..5: (1 + 2 + 3 + 4 + 5) / 5


def test_bulyan_needs_4f_plus_3_replies(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert Bulyan(num_malicious_nodes=1).aggregate_train(2, bulyan_replies()[:6]) == (
            None,
            None,
        )
    assert "Bulyan cannot aggregate: 6 replies, it needs at least 7" in caplog.text


def test_bulyan_with_a_custom_selection_rule() -> None:
    calls: list[tuple[int, int, int]] = []

    def first(contents: list[RecordDict], f: int, theta: int) -> list[RecordDict]:
        calls.append((len(contents), f, theta))
        return contents[:theta]

    arrays, _ = aggregate(Bulyan(num_malicious_nodes=1, selection_rule=first), bulyan_replies())
    # Nodes 1..5: 0, 2, 3, 4.5, 5; median 3; nearest three 3, 2, 4.5 again.
    assert calls == [(7, 1, 5)]
    assert float(arrays["v"].numpy()) == pytest.approx(9.5 / 3)
    # Flower's helper on plain lists: the 2 of 1, 5, 7 nearest 6 are 5 and 7, mean 6.
    layers = aggregate_n_closest_weights([np.array([6.0])], [[np.array([v])] for v in (1, 5, 7)], 2)
    assert [layer.tolist() for layer in layers] == [[6.0]]


@settings(max_examples=60, deadline=None)
@given(
    honest=st.lists(st.lists(st.floats(-10, 10), min_size=2, max_size=2), min_size=6, max_size=6),
    corrupted=st.lists(st.floats(40, 1e300) | st.floats(-1e300, -40), min_size=2, max_size=2),
    position=st.integers(0, 6),
)
def test_bulyan_stays_in_the_honest_range(
    honest: list[list[float]], corrupted: list[float], position: int
) -> None:
    rows = [*honest]
    rows.insert(position, corrupted)
    arrays, _ = aggregate(Bulyan(num_malicious_nodes=1), replies_of(rows, lambda r: [np.array(r)]))
    # At least 4 of the 5 selected are honest, so the median lies in the honest range; the
    # corrupted value is farther from it (>= 20) than any honest one (<= 20), so it is never
    # among the 3 averaged.
    assert_within(arrays["0"].numpy(), honest)


# -- one run of each through InProcessGrid --------------------------------------------------------


def value_app(values: Sequence[float]) -> ClientApp:
    """Node i trains to ``values[i - 1]`` (as a float32 (2, 2) array and a 0-d float64 one)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        v = values[context.node_id - 1]
        arrays = ArrayRecord({"w": np.full((2, 2), v, dtype=np.float32), "b": np.array(v)})
        metrics = MetricRecord({"num-examples": 1, "loss": float(context.node_id)})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        b = float(msg.content["arrays"]["b"].numpy())
        metrics = MetricRecord({"num-examples": 1, "b-seen": b})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


@pytest.mark.parametrize(
    ("make", "values", "expected"),
    [
        (FedMedian, [1.0, 2.0, 100.0, 3.0, 4.0], 3.0),
        (lambda **kw: FedTrimmedAvg(beta=0.2, **kw), [1.0, 2.0, 100.0, 3.0, 4.0], 3.0),
        # Every coordinate holds v, so distances are 5 (v_i - v_j)^2; scores (the n - f - 2 = 2
        # nearest) over 5: node 1: 1 + 4 = 5, node 2: 1 + 1 = 2, node 3: 1 + 4 = 5,
        # node 4: 4 + 9 = 13, node 5: 9025 + 9409. Node 2's value wins.
        (lambda **kw: Krum(num_malicious_nodes=1, **kw), [1.0, 2.0, 3.0, 5.0, 100.0], 2.0),
        # Nodes 2, 1, 3 (scores 2, 5, 5): (2 + 1 + 3) / 3 = 2.
        (
            lambda **kw: MultiKrum(num_malicious_nodes=1, num_nodes_to_select=3, **kw),
            [1.0, 2.0, 3.0, 5.0, 100.0],
            2.0,
        ),
        (lambda **kw: Bulyan(num_malicious_nodes=1, **kw), BULYAN_VALUES, 9.5 / 3),
    ],
    ids=["FedMedian", "FedTrimmedAvg", "Krum", "MultiKrum", "Bulyan"],
)
def test_a_run_in_process(
    make: Callable[..., FedAvg],
    values: list[float],
    expected: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    n = len(values)
    strategy = make(min_train_nodes=n, min_evaluate_nodes=n, min_available_nodes=n)
    initial = ArrayRecord({"w": np.zeros((2, 2), dtype=np.float32), "b": np.array(0.0)})
    with caplog.at_level(logging.INFO, logger="corolla.serverapp.strategy"):
        result = strategy.start(
            grid=InProcessGrid(value_app(values), num_nodes=n),
            initial_arrays=initial,
            num_rounds=2,
            timeout=10,
        )
    assert result.arrays["w"].numpy() == pytest.approx(np.full((2, 2), expected))
    assert float(result.arrays["b"].numpy()) == pytest.approx(expected)
    assert result.arrays["w"].dtype == "float32" and result.arrays["b"].numpy().shape == ()
    # The evaluate phase of round 1 saw round 1's aggregate.
    assert result.evaluate_metrics_clientapp[1]["b-seen"] == pytest.approx(expected)
    assert sorted(result.train_metrics_clientapp) == [1, 2]
    assert f"  {type(strategy).__name__}" in caplog.text  # summary() logged its settings


def test_a_run_leaves_out_a_non_finite_reply(caplog: pytest.LogCaptureFixture) -> None:
    values = [1.0, 2.0, 100.0, 3.0, float("nan")]
    strategy = FedMedian(min_train_nodes=5, min_available_nodes=5, fraction_evaluate=0.0)
    initial = ArrayRecord({"w": np.zeros((2, 2), dtype=np.float32), "b": np.array(0.0)})
    with caplog.at_level(logging.WARNING):
        result = strategy.start(
            grid=InProcessGrid(value_app(values), num_nodes=5),
            initial_arrays=initial,
            num_rounds=1,
            timeout=10,
        )
    assert "train failed on node 5: array 'w' holds NaN or infinite values" in caplog.text
    assert float(result.arrays["b"].numpy()) == 2.5  # median of 1, 2, 100, 3
