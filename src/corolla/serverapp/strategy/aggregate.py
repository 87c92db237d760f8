"""Weighted averaging of arrays and metrics, folded one reply at a time.

Also Flower's strategy helpers `aggregate_arrayrecords` and `aggregate_metricrecords`, and
the dtype rules strategies that keep server-side state (momentum, moments) share.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from corolla.common.errors import InvalidArgument
from corolla.records import Array, ArrayRecord, MetricRecord, RecordDict, _spool


def find_weight_record(content: RecordDict, weighted_by_key: str) -> MetricRecord | None:
    """The first `MetricRecord` of ``content`` that has ``weighted_by_key``, if any."""
    for record in content.metric_records.values():
        if weighted_by_key in record:
            return record
    return None


def read_weight(content: RecordDict, weighted_by_key: str) -> tuple[MetricRecord, float]:
    """The `MetricRecord` holding a reply's weight, and the weight (non-negative, finite).

    Raises `InvalidArgument` (with a reason fit for a log line) when it is missing or invalid.
    """
    record = find_weight_record(content, weighted_by_key)
    if record is None:
        raise InvalidArgument(f"no MetricRecord with {weighted_by_key!r}")
    value = record[weighted_by_key]
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{weighted_by_key!r} is {value!r}, not a non-negative number")
    return record, float(value)


Layout = dict[str, tuple[tuple[int, ...], str]]  # array name -> (shape, dtype name)


def layout_of(arrays: ArrayRecord) -> Layout:
    """The names, shapes and dtypes of ``arrays`` (no data)."""
    return {key: (array.shape, array.dtype) for key, array in arrays.items()}


def check_layout(arrays: ArrayRecord, layout: Layout) -> None:
    """Raise `InvalidArgument` unless ``arrays`` can be averaged with arrays of ``layout``:
    same names in the same order, same shapes, and dtypes of a compatible kind."""
    if list(arrays) != list(layout):
        raise InvalidArgument(f"array names {list(arrays)} differ from {list(layout)}")
    for key, array in arrays.items():
        shape, dtype = layout[key]
        if array.shape != shape:
            raise InvalidArgument(f"array {key!r} has shape {array.shape}, expected {shape}")
        if not np.can_cast(np.dtype(array.dtype), _sum_dtype(np.dtype(dtype)), "same_kind"):
            raise InvalidArgument(f"array {key!r} has dtype {array.dtype}, expected {dtype}")


def _sum_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    return np.result_type(dtype, np.float64)


def state_dtype(dtype: str | np.dtype[Any]) -> np.dtype[Any]:
    """The dtype server-side state of an array of ``dtype`` is kept in: the dtype itself for
    floating and complex arrays (as much memory as the model), float64 for the others."""
    dtype = np.dtype(dtype)
    return dtype if dtype.kind in "fc" else np.dtype(np.float64)


def cast_to(values: npt.NDArray[Any], dtype: str | np.dtype[Any]) -> npt.NDArray[Any]:
    """``values`` as an ndarray (0-d included) of ``dtype``; rounded first for integers and
    bools."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iub":
        values = np.rint(values)
    return np.asarray(values).astype(dtype, copy=False)


def arrays_like(values: Mapping[str, npt.NDArray[Any]], layout: Layout) -> ArrayRecord:
    """An `ArrayRecord` of ``values`` cast to the dtypes of ``layout``, in its order."""
    return ArrayRecord(
        {key: Array(cast_to(values[key], dtype)) for key, (_, dtype) in layout.items()}
    )


_FOLD_CHUNK = 1 << 20  # elements folded at a time: the float64 temporaries stay at 8 MiB


class WeightedArrayMean:
    """The weighted mean of `ArrayRecord`s, added one at a time.

    Keeps the running mean itself, one array per name in the dtype of `state_dtype` (the
    model's own for floating and complex arrays, float64 for the others), and folds each record
    in as ``mean += weight / total_so_far * (values - mean)`` (West's weighted incremental
    mean), computed in float64 (complex128) pieces of a million elements. So memory stays at
    one model copy plus a few MiB however many records are added or however large the model,
    and each update is rounded once to the model's dtype. The mean is cast back to the dtypes of
    the first record added (integers and bools are rounded first).
    """

    def __init__(self) -> None:
        self._means: dict[str, npt.NDArray[Any]] = {}
        self._layout: Layout = {}
        self._total = 0.0
        self._handed_out = False  # `result` gave the mean buffers away: copy before folding on
        self.count = 0

    def add(self, arrays: ArrayRecord, weight: float) -> None:
        """Fold ``arrays`` in with ``weight``; raises `InvalidArgument` on a layout mismatch."""
        if weight < 0 or not math.isfinite(weight):
            raise InvalidArgument(f"weight must be a non-negative number, got {weight}")
        if self.count == 0:
            self._start(arrays)
        else:
            check_layout(arrays, self._layout)
        if weight > 0:
            if self._handed_out:
                self._means = {key: mean.copy() for key, mean in self._means.items()}
                self._handed_out = False
            self._total += weight
            share = weight / self._total
            for key, array in arrays.items():
                _fold(self._means[key].reshape(-1), array.view().reshape(-1), share)
        self.count += 1

    @property
    def total_weight(self) -> float:
        return self._total

    @property
    def layout(self) -> Layout:
        """Names, shapes and dtypes of the records added (empty before the first)."""
        return dict(self._layout)

    def result(self) -> ArrayRecord | None:
        """The weighted mean, or None if nothing (or only zero weight) was added. Floating
        and complex means are handed over without a copy."""
        if self.count == 0 or self._total <= 0:
            return None
        self._handed_out = True
        return ArrayRecord(
            {key: _adopt(self._means[key], dtype) for key, (_, dtype) in self._layout.items()}
        )

    def _start(self, arrays: ArrayRecord) -> None:
        self._layout = layout_of(arrays)
        for key, array in arrays.items():
            dtype = state_dtype(array.dtype)
            # In the spool when the process has one: the mean is sent as it is (no copy).
            self._means[key] = _spool.zeros(array.shape, dtype.newbyteorder("<"))


def _fold(mean: npt.NDArray[Any], values: npt.NDArray[Any], share: float) -> None:
    """``mean += share * (values - mean)`` in place, piece by piece in float64 (complex128)."""
    wide = np.result_type(mean.dtype, np.float64)
    for start in range(0, mean.size, _FOLD_CHUNK):
        part = mean[start : start + _FOLD_CHUNK]
        if share == 1.0:  # the first weighted record: the mean is its values
            part[...] = values[start : start + _FOLD_CHUNK]
            continue
        step = values[start : start + _FOLD_CHUNK].astype(wide)
        step -= part
        step *= share
        step += part
        part[...] = step


def _adopt(mean: npt.NDArray[Any], dtype: str) -> Array:
    """An `Array` of ``dtype`` holding ``mean``: its own buffer when the dtypes agree (no copy),
    else a rounded, cast copy."""
    if np.dtype(dtype) != mean.dtype:
        return Array(cast_to(mean, dtype))
    flat = np.ascontiguousarray(mean).reshape(-1).data.toreadonly()
    return Array(dtype=mean.dtype.name, shape=mean.shape, data=flat)


def aggregate_arrayrecords(records: list[RecordDict], weighting_metric_name: str) -> ArrayRecord:
    """The weighted mean of the arrays in ``records`` (replies' contents).

    Each content's arrays (those of all its ArrayRecords, taken together) are weighted by
    the ``weighting_metric_name`` entry of its first `MetricRecord` that has one; every
    content needs such a weight (non-negative, finite) and the same array names, shapes and
    dtypes, else `InvalidArgument`. If every weight is zero, the mean is unweighted; no
    contents give an empty `ArrayRecord`.
    """
    weighted = [
        (_all_arrays(record), read_weight(record, weighting_metric_name)[1]) for record in records
    ]
    if sum(w for _, w in weighted) <= 0:
        weighted = [(arrays, 1.0) for arrays, _ in weighted]
    mean = WeightedArrayMean()
    for arrays, weight in weighted:
        mean.add(arrays, weight)
    return mean.result() or ArrayRecord()


def _all_arrays(content: RecordDict) -> ArrayRecord:
    records = list(content.array_records.values())
    if len(records) == 1:
        return records[0]
    merged = ArrayRecord()
    for record in records:
        for key, array in record.items():
            if key in merged:
                raise InvalidArgument(f"array {key!r} is in more than one ArrayRecord")
            merged[key] = array
    return merged


def aggregate_metricrecords(records: list[RecordDict], weighting_metric_name: str) -> MetricRecord:
    """Weighted average of every numeric metric in ``records`` (replies' contents).

    Each content contributes the first `MetricRecord` holding ``weighting_metric_name``,
    weighted by that entry (contents without one are skipped). A metric is averaged over the
    replies that report it; lists are averaged item by item (when their lengths agree). The
    weighting entry itself becomes the total weight. If every weight is zero, the average is
    unweighted.
    """
    weighted: list[tuple[MetricRecord, float]] = []
    for content in records:
        try:
            weighted.append(read_weight(content, weighting_metric_name))
        except InvalidArgument:
            continue  # no usable weight: this content does not take part
    if not weighted:
        return MetricRecord()
    if sum(w for _, w in weighted) <= 0:
        weighted = [(record, 1.0) for record, _ in weighted]

    result = MetricRecord()
    for key in _keys_in_order(record for record, _ in weighted):
        if key == weighting_metric_name:
            continue
        mean = _weighted_mean([(r[key], w) for r, w in weighted if key in r])
        if mean is not None:
            result[key] = mean
    total = sum(r[weighting_metric_name] for r, _ in weighted)
    result[weighting_metric_name] = total
    return result


def _keys_in_order(records: Iterable[MetricRecord]) -> list[str]:
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    return list(keys)


def _weighted_mean(values: list[tuple[Any, float]]) -> float | list[float] | None:
    total = sum(w for _, w in values)
    if total <= 0:
        return None
    if all(isinstance(v, (int, float)) for v, _ in values):
        return sum(float(v) * w for v, w in values) / total
    if all(isinstance(v, list) for v, _ in values) and len({len(v) for v, _ in values}) == 1:
        stacked = np.array([v for v, _ in values], dtype=np.float64)
        weights = np.array([w for _, w in values], dtype=np.float64)
        return [float(x) for x in weights @ stacked / total]
    return None  # mixed scalars and lists, or lists of different lengths: no meaningful mean
