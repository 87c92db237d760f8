"""Flower's strategy helpers: aggregate_arrayrecords and aggregate_metricrecords."""

from __future__ import annotations

import inspect
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corolla.app import ArrayRecord, MetricRecord, RecordDict
from corolla.common.errors import InvalidArgument
from corolla.serverapp.strategy.aggregate import (
    WeightedArrayMean,
    aggregate_arrayrecords,
    aggregate_metricrecords,
)


def content(weight: float, **arrays: object) -> RecordDict:
    return RecordDict(
        {
            "arrays": ArrayRecord({k: np.asarray(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"n": weight}),
        }
    )


def test_the_helpers_take_flowers_parameter_names() -> None:
    for fn in (aggregate_arrayrecords, aggregate_metricrecords):
        assert list(inspect.signature(fn).parameters) == ["records", "weighting_metric_name"]


def test_aggregate_arrayrecords_by_hand() -> None:
    records = [
        content(1, w=np.array([1.0, 2.0], dtype=np.float32), s=np.array(4.0)),
        content(3, w=np.array([5.0, 6.0], dtype=np.float32), s=np.array(8.0)),
    ]
    result = aggregate_arrayrecords(records, "n")
    # w: (1 * [1, 2] + 3 * [5, 6]) / 4 = [4, 5]; s: (4 + 24) / 4 = 7 (a 0-d array).
    assert list(result) == ["w", "s"]
    assert result["w"].numpy().tolist() == [4.0, 5.0] and result["w"].dtype == "float32"
    assert result["s"].shape == () and float(result["s"].numpy()) == 7.0


def test_aggregate_arrayrecords_edge_cases() -> None:
    assert aggregate_arrayrecords([], "n") == ArrayRecord()
    zero = [content(0, w=[1.0]), content(0, w=[3.0])]
    assert aggregate_arrayrecords(zero, "n")["w"].numpy().tolist() == [2.0]  # unweighted
    with pytest.raises(InvalidArgument, match="no MetricRecord with 'm'"):
        aggregate_arrayrecords([content(1, w=[1.0])], "m")
    with pytest.raises(InvalidArgument, match="shape"):
        aggregate_arrayrecords([content(1, w=[1.0]), content(1, w=[1.0, 2.0])], "n")
    split = RecordDict(
        {
            "a": ArrayRecord({"x": np.array([2.0])}),
            "b": ArrayRecord({"y": np.array([4.0])}),
            "m": MetricRecord({"n": 1}),
        }
    )
    merged = aggregate_arrayrecords([split], "n")  # every ArrayRecord of a content counts
    assert {k: merged[k].numpy().tolist() for k in merged} == {"x": [2.0], "y": [4.0]}


def test_a_zero_dimensional_mean_is_an_ndarray() -> None:
    mean = WeightedArrayMean()
    for value, weight in ((np.float32(2.0), 1.0), (np.float32(5.0), 2.0)):
        mean.add(ArrayRecord({"s": np.asarray(value)}), weight)
    result = mean.result()
    assert result is not None
    assert result["s"].shape == () and result["s"].dtype == "float32"
    assert float(result["s"].numpy()) == 4.0  # (2 + 10) / 3


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.integers(1, 1000)), min_size=1, max_size=8))
def test_aggregate_arrayrecords_is_the_weighted_mean(values: list[tuple[float, int]]) -> None:
    records = [content(n, w=[v, 2 * v]) for v, n in values]
    total = sum(n for _, n in values)
    expected = sum(v * n for v, n in values) / total
    result = aggregate_arrayrecords(records, "n")["w"].numpy()
    np.testing.assert_allclose(result, [expected, 2 * expected], rtol=1e-9, atol=1e-6)
    metrics = aggregate_metricrecords(records, "n")
    assert metrics["n"] == total


def test_folding_a_large_model_holds_one_copy_of_it_plus_a_few_mib() -> None:
    model = ArrayRecord([np.ones(8 * 2**20, dtype=np.float32)])  # 32 MiB
    mean = WeightedArrayMean()
    tracemalloc.start()
    try:
        for weight in (1.0, 2.0, 3.0):
            mean.add(model, weight)
        result = mean.result()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result is not None and result["0"].dtype == "float32"
    assert peak < 32 * 2**20 + 24 * 2**20  # the mean (no float64 sums) and one piece's temps
    assert np.array_equal(result["0"].view(), model["0"].view())


def test_the_incremental_mean_of_many_float32_replies_is_close_to_the_exact_one() -> None:
    rng = np.random.default_rng(7)
    replies = [rng.normal(0, 1, 1000).astype(np.float32) for _ in range(500)]
    weights = rng.integers(1, 100, 500).astype(float)
    mean = WeightedArrayMean()
    for values, weight in zip(replies, weights, strict=True):
        mean.add(ArrayRecord([values]), weight)
    result = mean.result()
    assert result is not None
    exact = np.average(np.stack(replies).astype(np.float64), axis=0, weights=weights)
    np.testing.assert_allclose(result["0"].view(), exact, rtol=0, atol=2e-6)


def test_a_result_given_out_does_not_change_when_more_records_are_folded() -> None:
    mean = WeightedArrayMean()
    mean.add(ArrayRecord([np.array([1.0, 3.0])]), 1.0)
    first = mean.result()
    mean.add(ArrayRecord([np.array([3.0, 5.0])]), 1.0)
    second = mean.result()
    assert first is not None and second is not None
    assert first["0"].numpy().tolist() == [1.0, 3.0]
    assert second["0"].numpy().tolist() == [2.0, 4.0]
