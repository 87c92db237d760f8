"""`MetricRecord`, `ConfigRecord`, `ArrayRecord` and `RecordDict`: what they accept and refuse."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import pytest

from corolla.records import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

# -- MetricRecord --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [0, -7, 2**62, 1.5, float("inf"), [], [1, 2, 3], [0.5, -1.0], (1, 2)],
)
def test_metric_record_accepts(value: Any) -> None:
    record = MetricRecord({"m": value})
    stored = record["m"]
    expected = list(value) if isinstance(value, tuple) else value
    assert stored == expected
    assert type(stored) is type(expected)


def test_metric_record_tuple_becomes_list() -> None:
    record = MetricRecord({"m": (1.0, 2.0)})
    assert record["m"] == [1.0, 2.0]
    assert isinstance(record["m"], list)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(True, id="bool"),
        pytest.param(False, id="bool-false"),
        pytest.param([True, False], id="bool-list"),
        pytest.param("text", id="str"),
        pytest.param(b"raw", id="bytes"),
        pytest.param(["a"], id="str-list"),
        pytest.param([b"a"], id="bytes-list"),
        pytest.param(None, id="none"),
        pytest.param({"a": 1}, id="dict"),
        pytest.param(object(), id="object"),
        pytest.param(1 + 2j, id="complex"),
        pytest.param({1, 2}, id="set"),
        pytest.param([[1, 2]], id="nested-list"),
        pytest.param(np.zeros((2, 2)), id="2d-ndarray"),
        pytest.param(np.array(1.0), id="0d-ndarray"),
        pytest.param(np.bool_(True), id="numpy-bool"),
    ],
)
def test_metric_record_refuses_with_key_in_message(value: Any) -> None:
    with pytest.raises(TypeError, match=r"MetricRecord\['acc'\]"):
        MetricRecord({"acc": value})
    record = MetricRecord()
    with pytest.raises(TypeError, match=r"\['acc'\]"):
        record["acc"] = value
    assert "acc" not in record


@pytest.mark.parametrize("value", [[1, 2.0], [1.0, 2], [1, True], [0.5, "x"], [1, None]], ids=repr)
def test_metric_record_refuses_mixed_lists(value: list[Any]) -> None:
    with pytest.raises(TypeError, match="share one type"):
        MetricRecord({"loss": value})


@pytest.mark.parametrize("key", [1, None, b"k", ("a",)])
def test_metric_record_refuses_non_str_keys(key: Any) -> None:
    with pytest.raises(TypeError, match="keys must be str"):
        MetricRecord({key: 1.0})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float32(1.5), 1.5),
        (np.float64(-2.25), -2.25),
        (np.int64(3), 3),
        (np.int8(-4), -4),
        (np.uint32(7), 7),
    ],
)
def test_metric_record_numpy_scalars_become_python(value: Any, expected: Any) -> None:
    record = MetricRecord({"m": value})
    assert record["m"] == expected
    assert type(record["m"]) is type(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.array([1.5, 2.5], dtype=np.float32), [1.5, 2.5]),
        (np.array([1, 2, 3], dtype=np.int64), [1, 2, 3]),
        (np.array([], dtype=np.float64), []),
        ([np.float32(0.5), np.float32(1.0)], [0.5, 1.0]),
        ([np.int16(1), 2], [1, 2]),
    ],
)
def test_metric_record_numpy_lists_become_python(value: Any, expected: list[Any]) -> None:
    record = MetricRecord({"m": value})
    assert record["m"] == expected
    assert type(record["m"]) is list
    assert all(type(x) is type(y) for x, y in zip(record["m"], expected, strict=True))


def test_metric_record_mapping_api() -> None:
    record = MetricRecord({"a": 1, "b": 2.0})
    assert dict(record) == {"a": 1, "b": 2.0}
    assert len(record) == 2
    del record["a"]
    assert list(record) == ["b"]
    with pytest.raises(KeyError):
        record["a"]


@pytest.mark.parametrize("cls", [MetricRecord, ConfigRecord])
def test_records_take_no_keyword_entries(cls: Any) -> None:
    # Flower's (dict, keep_input) signature: a stray keyword is an error, never a stored key
    with pytest.raises(TypeError):
        cls({"a": 1}, b=2)
    assert "keep_input" not in cls({"a": 1}, keep_input=False)


def test_metric_record_equality() -> None:
    assert MetricRecord({"a": 1.0}) == MetricRecord({"a": 1.0})
    assert MetricRecord({"a": 1.0}) == {"a": 1.0}
    assert MetricRecord({"a": 1.0}) != MetricRecord({"a": 2.0})
    # same data, different record kinds are different things
    assert MetricRecord({"a": 1.0}) != ConfigRecord({"a": 1.0})


# -- ConfigRecord --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        1,
        -1.5,
        "text",
        "",
        True,
        False,
        b"\x00\xff",
        [],
        [1, 2],
        [1.0],
        ["a", "b"],
        [True, False],
        [b"x", b""],
    ],
    ids=repr,
)
def test_config_record_accepts(value: Any) -> None:
    record = ConfigRecord({"c": value})
    assert record["c"] == value
    assert type(record["c"]) is type(value)
    if isinstance(value, list):
        assert [type(v) for v in record["c"]] == [type(v) for v in value]


def test_config_record_keeps_bool_distinct_from_int() -> None:
    record = ConfigRecord({"flag": True, "n": 1})
    assert type(record["flag"]) is bool
    assert type(record["n"]) is int


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="none"),
        pytest.param({"a": 1}, id="dict"),
        pytest.param(object(), id="object"),
        pytest.param(1j, id="complex"),
        pytest.param(bytearray(b"x"), id="bytearray"),
        pytest.param([[1]], id="nested"),
        pytest.param([None], id="none-list"),
        pytest.param([{"a": 1}], id="dict-list"),
        pytest.param(np.zeros((1, 1)), id="2d-ndarray"),
    ],
)
def test_config_record_refuses_with_key_in_message(value: Any) -> None:
    with pytest.raises(TypeError, match=r"ConfigRecord\['lr'\]"):
        ConfigRecord({"lr": value})


@pytest.mark.parametrize(
    "value", [[1, "a"], [True, 1], [1.0, 1], [b"a", "a"], ["a", None]], ids=repr
)
def test_config_record_refuses_mixed_lists(value: list[Any]) -> None:
    with pytest.raises(TypeError, match="share one type"):
        ConfigRecord({"c": value})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float32(1.5), 1.5),
        (np.int64(3), 3),
        (np.bool_(True), True),
        (np.bool_(False), False),
        (np.str_("abc"), "abc"),
        (np.bytes_(b"ab"), b"ab"),
        (np.array([True, False]), [True, False]),
        (np.array(["x", "yz"]), ["x", "yz"]),
        ([np.bool_(True), True], [True, True]),
    ],
)
def test_config_record_numpy_values_become_python(value: Any, expected: Any) -> None:
    record = ConfigRecord({"c": value})
    assert record["c"] == expected
    assert type(record["c"]) is type(expected)
    if isinstance(expected, list):
        assert [type(v) for v in record["c"]] == [type(v) for v in expected]


def test_config_record_count_bytes() -> None:
    record = ConfigRecord({"ab": "xyz", "c": b"1234", "d": 1, "e": [1.0, 2.0], "f": ["a", "bb"]})
    # keys: 2 + 1 + 1 + 1 + 1; values: 3 + 4 + 8 + 16 + (1 + 2)
    assert record.count_bytes() == 6 + 3 + 4 + 8 + 16 + 3


def test_metric_record_count_bytes() -> None:
    assert MetricRecord().count_bytes() == 0
    assert MetricRecord({"loss": 0.5, "hist": [1, 2, 3]}).count_bytes() == 4 + 8 + 4 + 24


# -- ArrayRecord ---------------------------------------------------------------------------------


def test_array_record_from_list_keeps_order_and_keys() -> None:
    arrays = [np.full((i + 1,), i, dtype=np.float32) for i in range(12)]
    record = ArrayRecord(arrays)
    assert list(record) == [str(i) for i in range(12)]
    back = record.to_numpy_ndarrays()
    assert len(back) == 12
    for original, restored in zip(arrays, back, strict=True):
        np.testing.assert_array_equal(restored, original)
        assert restored.dtype == original.dtype


def test_array_record_from_tuple_and_classmethod() -> None:
    arrays = (np.zeros(2), np.ones(3, dtype=np.int8))
    record = ArrayRecord(arrays)
    assert list(record) == ["0", "1"]
    assert record == ArrayRecord.from_numpy_ndarrays(list(arrays))
    assert record["1"].dtype == "int8"


def test_array_record_from_dict_keeps_insertion_order() -> None:
    mapping = {"z": np.zeros(1), "a": Array(np.ones(2)), "m": np.arange(3)}
    record = ArrayRecord(mapping)
    assert list(record) == ["z", "a", "m"]
    assert all(isinstance(v, Array) for v in record.values())
    assert record["a"] is mapping["a"]  # Arrays are kept, not copied
    np.testing.assert_array_equal(record["m"].numpy(), [0, 1, 2])


def test_array_record_order_matters_for_equality() -> None:
    a = ArrayRecord({"x": np.zeros(1), "y": np.ones(1)})
    b = ArrayRecord({"y": np.ones(1), "x": np.zeros(1)})
    assert a != b
    assert a == ArrayRecord({"x": np.zeros(1), "y": np.ones(1)})


def test_array_record_copies_ndarrays() -> None:
    source = np.arange(4.0)
    record = ArrayRecord([source])
    source[:] = 0.0
    np.testing.assert_array_equal(record["0"].numpy(), np.arange(4.0))


def test_array_record_to_numpy_ndarrays_writable_and_independent() -> None:
    record = ArrayRecord([np.arange(3), np.ones((2, 2))])
    first, second = record.to_numpy_ndarrays()
    assert first.flags.writeable and second.flags.writeable
    first += 1
    second *= 5
    np.testing.assert_array_equal(record["0"].numpy(), [0, 1, 2])
    np.testing.assert_array_equal(record["1"].numpy(), np.ones((2, 2)))
    again, _ = record.to_numpy_ndarrays()
    assert not np.shares_memory(first, again)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param([1.0, 2.0], id="list"),
        pytest.param(3.0, id="float"),
        pytest.param("abc", id="str"),
        pytest.param(None, id="none"),
        pytest.param(b"raw", id="bytes"),
    ],
)
def test_array_record_refuses_bad_values(value: Any) -> None:
    with pytest.raises(TypeError, match=r"ArrayRecord\['w'\]"):
        ArrayRecord({"w": value})
    record = ArrayRecord()
    with pytest.raises(TypeError):
        record["w"] = value
    assert len(record) == 0


def test_array_record_refuses_bad_list_items() -> None:
    with pytest.raises(TypeError, match=r"ArrayRecord\['1'\]"):
        ArrayRecord([np.zeros(1), [1, 2]])


def test_array_record_refuses_non_numeric_ndarray() -> None:
    with pytest.raises(ValueError):
        ArrayRecord([np.array(["a"])])


@pytest.mark.parametrize("arrays", [np.zeros(3), "abc", 5, {np.zeros(1).tobytes()}])
def test_array_record_refuses_bad_containers(arrays: Any) -> None:
    with pytest.raises(TypeError):
        ArrayRecord(arrays)


def test_array_record_refuses_non_str_keys() -> None:
    with pytest.raises(TypeError, match="keys must be str"):
        ArrayRecord({0: np.zeros(1)})


def test_array_record_count_bytes() -> None:
    record = ArrayRecord(
        OrderedDict(
            [
                ("a", np.zeros((3, 4), dtype=np.float64)),
                ("b", np.zeros(5, dtype=np.int8)),
                ("c", np.zeros((0,), dtype=np.float32)),
            ]
        )
    )
    assert record.count_bytes() == 96 + 5 + 0
    assert ArrayRecord().count_bytes() == 0


def test_array_record_mapping_api() -> None:
    record = ArrayRecord([np.zeros(1), np.ones(1)])
    del record["0"]
    assert list(record) == ["1"]
    record["new"] = np.full(2, 7)
    assert list(record) == ["1", "new"]
    assert "ArrayRecord" in repr(record)


# -- RecordDict ----------------------------------------------------------------------------------


def make_record_dict() -> RecordDict:
    return RecordDict(
        {
            "model": ArrayRecord([np.zeros(2)]),
            "metrics": MetricRecord({"acc": 0.9}),
            "config": ConfigRecord({"lr": 0.1}),
            "opt": ArrayRecord({"m": np.ones(1)}),
            "train_metrics": MetricRecord({"loss": [0.1, 0.2]}),
        }
    )


def test_record_dict_typed_views() -> None:
    rd = make_record_dict()
    assert list(rd.array_records) == ["model", "opt"]
    assert list(rd.metric_records) == ["metrics", "train_metrics"]
    assert list(rd.config_records) == ["config"]
    assert all(isinstance(v, ArrayRecord) for v in rd.array_records.values())
    assert rd.metric_records["metrics"] is rd["metrics"]


def test_record_dict_views_write_through() -> None:
    rd = make_record_dict()
    view = rd.config_records
    view["other"] = ConfigRecord({"y": 2})
    assert rd["other"] == ConfigRecord({"y": 2})
    rd.array_records["extra"] = ArrayRecord([np.zeros(1)])
    assert list(rd.array_records) == ["model", "opt", "extra"]
    del rd.metric_records["metrics"]
    assert "metrics" not in rd
    rd["later"] = ConfigRecord({"x": 1})
    assert "later" in view  # the view reads the RecordDict as it is now


def test_record_dict_views_check_the_kind() -> None:
    rd = make_record_dict()
    with pytest.raises(TypeError):
        rd.array_records["bad"] = MetricRecord({"x": 1})  # type: ignore[assignment]
    assert "bad" not in rd
    with pytest.raises(KeyError):
        rd.array_records["metrics"]  # a MetricRecord: not in the ArrayRecord view
    with pytest.raises(KeyError):
        del rd.array_records["metrics"]
    assert "metrics" in rd
    assert "metrics" not in rd.array_records
    assert rd.array_records.get("metrics") is None
    # a view may replace a record of another kind under the same key (the RecordDict warns)
    rd.array_records["metrics"] = ArrayRecord([np.ones(1)])
    assert isinstance(rd["metrics"], ArrayRecord)


def test_record_dict_empty_views() -> None:
    rd = RecordDict()
    assert rd.array_records == {}
    assert rd.metric_records == {}
    assert rd.config_records == {}
    assert len(rd) == 0


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"a": 1}, id="dict"),
        pytest.param([np.zeros(1)], id="list"),
        pytest.param(np.zeros(1), id="ndarray"),
        pytest.param(Array(np.zeros(1)), id="array"),
        pytest.param(None, id="none"),
        pytest.param(RecordDict(), id="record-dict"),
    ],
)
def test_record_dict_refuses_non_records(value: Any) -> None:
    with pytest.raises(TypeError, match=r"RecordDict\['bad'\]"):
        RecordDict({"bad": value})
    rd = RecordDict()
    with pytest.raises(TypeError):
        rd["bad"] = value
    assert "bad" not in rd


def test_record_dict_refuses_non_str_keys() -> None:
    with pytest.raises(TypeError, match="keys must be str"):
        RecordDict({1: MetricRecord()})


def test_record_dict_equality_and_count_bytes() -> None:
    assert make_record_dict() == make_record_dict()
    other = make_record_dict()
    other["metrics"] = MetricRecord({"acc": 0.8})
    assert other != make_record_dict()
    rd = RecordDict({"ab": MetricRecord({"x": 1.0}), "w": ArrayRecord([np.zeros(4)])})
    assert rd.count_bytes() == (2 + 1 + 8) + (1 + 32)
