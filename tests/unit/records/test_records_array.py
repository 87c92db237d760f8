"""`Array`: lossless NumPy round trips, immutability, validation and wire encoding."""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from corolla.common import objects
from corolla.common.errors import InvalidArgument
from corolla.records import Array, ArrayRecord, serde

NUMERIC_DTYPES = [
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
    "bool",
]

_UINT_OF_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def little_endian_bytes(arr: np.ndarray[Any, Any]) -> bytes:
    """What `Array.data` must hold for ``arr``: its values, little-endian, C order."""
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def sample(dtype: str, shape: tuple[int, ...] = (2, 3)) -> np.ndarray[Any, Any]:
    size = int(np.prod(shape))
    if dtype == "bool":
        return (np.arange(size) % 3 == 0).reshape(shape)
    np_dtype = np.dtype(dtype)
    if np_dtype.kind in "iu":
        info = np.iinfo(np_dtype)
        extremes = [int(info.min), int(info.max), 0, 1, int(info.max) // 3, int(info.min) // 7]
        return np.array([extremes[i % 6] for i in range(size)], dtype=np_dtype).reshape(shape)
    values = np.linspace(-3.5, 7.25, num=size).astype(np_dtype)
    if np_dtype.kind == "c":
        values = values + 1j * np.arange(size).astype(np_dtype)
    return values.reshape(shape)


# -- dtypes and round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES)
def test_round_trip_every_numeric_dtype(dtype: str) -> None:
    original = sample(dtype)
    array = Array(original)
    assert array.dtype == dtype
    assert array.shape == (2, 3)
    assert array.nbytes == original.nbytes
    back = array.numpy()
    assert back.dtype == np.dtype(dtype)
    assert back.shape == original.shape
    np.testing.assert_array_equal(back, original)
    assert back.tobytes() == little_endian_bytes(original)


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES)
def test_from_numpy_ndarray_equals_constructor(dtype: str) -> None:
    original = sample(dtype)
    assert Array.from_numpy_ndarray(original) == Array(original)


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES)
def test_from_parts_equals_from_ndarray(dtype: str) -> None:
    original = sample(dtype)
    from_parts = Array(dtype=dtype, shape=original.shape, data=little_endian_bytes(original))
    assert from_parts == Array(original)
    np.testing.assert_array_equal(from_parts.numpy(), original)


@pytest.mark.parametrize("dtype", ["int8", "float32", "complex128", "bool"])
def test_zero_dimensional(dtype: str) -> None:
    original = np.array(sample(dtype, (1,))[0], dtype=dtype)
    assert original.ndim == 0
    array = Array(original)
    assert array.shape == ()
    assert array.nbytes == np.dtype(dtype).itemsize
    back = array.numpy()
    assert back.shape == ()
    assert back.dtype == np.dtype(dtype)
    assert back[()] == original[()]


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4, 2)])
@pytest.mark.parametrize("dtype", ["float64", "uint16", "bool"])
def test_empty(shape: tuple[int, ...], dtype: str) -> None:
    array = Array(np.zeros(shape, dtype=dtype))
    assert array.shape == shape
    assert array.nbytes == 0
    assert bytes(array.data) == b""
    back = array.numpy()
    assert back.shape == shape
    assert back.dtype == np.dtype(dtype)
    assert back.size == 0


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a: a[::2], id="step-rows"),
        pytest.param(lambda a: a[:, ::-3], id="negative-step-cols"),
        pytest.param(lambda a: a.T, id="transpose"),
        pytest.param(lambda a: np.asfortranarray(a), id="fortran"),
        pytest.param(lambda a: a[1:, 2:5], id="window"),
    ],
)
def test_non_contiguous_inputs(make: Any) -> None:
    base = np.arange(6 * 7, dtype=np.float64).reshape(6, 7) * 1.5
    view = make(base)
    array = Array(view)
    assert array.shape == view.shape
    back = array.numpy()
    np.testing.assert_array_equal(back, view)
    assert back.flags.c_contiguous
    assert bytes(array.data) == np.ascontiguousarray(view).tobytes()


@pytest.mark.parametrize("dtype", ["int16", "int32", "int64", "uint32", "float16", "float64"])
def test_big_endian_input(dtype: str) -> None:
    native = sample(dtype)
    big = native.astype(np.dtype(dtype).newbyteorder(">"))
    assert big.dtype.byteorder == ">"
    array = Array(big)
    assert array.dtype == dtype
    back = array.numpy()
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, native)
    # the wire bytes do not depend on the byte order of the input
    assert bytes(array.data) == bytes(Array(native).data)


def test_big_endian_float64_named_float64() -> None:
    arr = np.array([1.0, -2.5, 3e300]).astype(">f8")
    array = Array(arr)
    assert array.dtype == "float64"
    np.testing.assert_array_equal(array.numpy(), [1.0, -2.5, 3e300])


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "complex64", "complex128"])
@pytest.mark.parametrize("order", ["<", ">"])
def test_nan_and_inf_bit_exact(dtype: str, order: str) -> None:
    np_dtype = np.dtype(dtype)
    real = np.dtype(f"f{np_dtype.itemsize // 2}") if np_dtype.kind == "c" else np_dtype
    uint = _UINT_OF_SIZE[real.itemsize]
    raw = np.array([0, 0, 0, 0, 0, 0], dtype=uint)
    # quiet NaN with a payload, negative NaN, +inf, -inf, -0.0, smallest subnormal
    bits = {
        2: [0x7E01, 0xFE00, 0x7C00, 0xFC00, 0x8000, 0x0001],
        4: [0x7FC00123, 0xFFC00000, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001],
        8: [
            0x7FF8000000000ABC,
            0xFFF8000000000000,
            0x7FF0000000000000,
            0xFFF0000000000000,
            0x8000000000000000,
            0x0000000000000001,
        ],
    }[real.itemsize]
    raw[:] = bits
    values = raw.view(real)
    if np_dtype.kind == "c":
        values = values.view(np_dtype)  # pairs of the specials as (real, imag)
    values = values.astype(np_dtype.newbyteorder(order))
    back = Array(values).numpy()
    expected = np.ascontiguousarray(values, dtype=np_dtype.newbyteorder("<"))
    assert back.view(uint).tolist() == expected.view(uint).tolist()
    assert back.view(uint).tolist() == bits


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES)
def test_same_dtype_name_through_aliases(dtype: str) -> None:
    for alias in {np.dtype(dtype).str, np.dtype(dtype).char, dtype}:
        assert Array(dtype=alias, shape=(0,), data=b"").dtype == dtype


def test_platform_int_alias_normalised() -> None:
    arr = np.array([1, 2, 3], dtype=np.longlong)
    array = Array(arr)
    assert array.dtype == "int64"
    assert array == Array(np.array([1, 2, 3], dtype=np.int64))


# -- immutability and zero copy ------------------------------------------------------------------


def test_numpy_is_a_writable_copy() -> None:
    array = Array(np.arange(4.0))
    back = array.numpy()
    assert back.flags.writeable
    back += 1  # in place, as Flower apps do (a += noise)
    back[0] = 99.0
    np.testing.assert_array_equal(back, [99.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(array.numpy(), [0.0, 1.0, 2.0, 3.0])
    assert not np.shares_memory(array.numpy(), array.numpy())


def test_view_is_read_only() -> None:
    back = Array(np.arange(4.0)).view()
    assert not back.flags.writeable
    with pytest.raises(ValueError):
        back[0] = 99.0


def test_view_is_zero_copy() -> None:
    array = Array(np.arange(1000, dtype=np.int32))
    first, second = array.view(), array.view()
    assert np.shares_memory(first, second)
    data_address = np.frombuffer(array.data, dtype=np.uint8).ctypes.data
    assert first.ctypes.data == data_address


def test_numpy_does_not_share_the_stored_bytes() -> None:
    array = Array(np.arange(1000, dtype=np.int32))
    stored = np.frombuffer(array.data, dtype=np.int32)
    assert not np.shares_memory(array.numpy(), stored)


def test_torch_is_independent_of_the_array() -> None:
    import torch

    array = Array(np.arange(3.0))
    tensor = array.torch()
    tensor += 1
    assert torch.equal(tensor, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    np.testing.assert_array_equal(array.numpy(), [0.0, 1.0, 2.0])


def test_source_edits_do_not_leak_in() -> None:
    source = np.arange(10, dtype=np.float32)
    array = Array(source)
    data_id = array.data_id
    source[:] = -1.0
    np.testing.assert_array_equal(array.numpy(), np.arange(10, dtype=np.float32))
    assert array.data_id == data_id
    assert hashlib.sha256(array.data).hexdigest() == data_id


def test_source_edits_do_not_leak_in_contiguous_same_dtype() -> None:
    # the fast path (already little-endian, C-contiguous) must still copy
    source = np.arange(10, dtype="<i8")
    array = Array.from_numpy_ndarray(source)
    source[3] = 1000
    assert array.numpy()[3] == 3


def test_data_is_read_only() -> None:
    array = Array(dtype="uint8", shape=(3,), data=bytearray(b"abc"))
    assert memoryview(array.data).readonly


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "shape", "nbytes"),
    [
        ("float64", (2,), 15),
        ("float64", (2,), 17),
        ("int32", (2, 3), 20),
        ("uint8", (), 0),
        ("float32", (0,), 4),
    ],
)
def test_data_shape_mismatch(dtype: str, shape: tuple[int, ...], nbytes: int) -> None:
    with pytest.raises(InvalidArgument, match="bytes"):
        Array(dtype=dtype, shape=shape, data=b"\0" * nbytes)


def test_negative_dimension_refused() -> None:
    with pytest.raises(InvalidArgument, match="negative"):
        Array(dtype="uint8", shape=(-1,), data=b"")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(np.array([object(), 1], dtype=object), id="object"),
        pytest.param(np.array(["a", "bc"]), id="str"),
        pytest.param(np.array([b"a", b"bc"]), id="bytes"),
        pytest.param(np.zeros(2, dtype=[("a", "f8"), ("b", "i4")]), id="structured"),
        pytest.param(np.zeros(2, dtype="V8"), id="void"),
        pytest.param(np.array(["2024-01-01"], dtype="datetime64[D]"), id="datetime"),
        pytest.param(np.array([1], dtype="timedelta64[s]"), id="timedelta"),
    ],
)
def test_non_numeric_ndarray_refused(value: np.ndarray[Any, Any]) -> None:
    with pytest.raises(InvalidArgument):
        Array(value)
    with pytest.raises(InvalidArgument):
        Array.from_numpy_ndarray(value)


@pytest.mark.parametrize("name", ["object", "str", "U3", "S4", "V8", "datetime64[s]", "nonsense"])
def test_non_numeric_dtype_name_refused(name: str) -> None:
    with pytest.raises(InvalidArgument):
        Array(dtype=name, shape=(0,), data=b"")


@pytest.mark.parametrize("value", [[1.0, 2.0], (1, 2), 3.0, "abc", None, b"\0" * 8])
def test_non_ndarray_positional_refused(value: Any) -> None:
    with pytest.raises(TypeError):
        Array(value)


def test_ndarray_and_parts_together_refused() -> None:
    with pytest.raises(TypeError):
        Array(np.zeros(2), dtype="float64")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"dtype": "float64", "shape": (1,)},
        {"dtype": "float64", "data": b"\0" * 8},
        {"shape": (1,), "data": b"\0" * 8},
    ],
)
def test_incomplete_parts_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        Array(**kwargs)


def test_non_contiguous_data_buffer_refused_or_usable() -> None:
    strided = memoryview(np.arange(10.0)[::2])
    try:
        array = Array(dtype="float64", shape=(5,), data=strided)
    except InvalidArgument:
        return
    np.testing.assert_array_equal(array.numpy(), np.arange(10.0)[::2])
    assert array.data_id == hashlib.sha256(np.arange(10.0)[::2].tobytes()).hexdigest()


# -- identity and equality -----------------------------------------------------------------------


def test_data_id_is_sha256_of_data() -> None:
    original = np.arange(100, dtype=np.float64)
    array = Array(original)
    assert array.data_id == hashlib.sha256(original.tobytes()).hexdigest()
    assert array.data_id == objects.object_id_of(array.data)
    assert len(array.data_id) == 64


def test_data_id_of_empty_array() -> None:
    assert Array(np.zeros(0)).data_id == hashlib.sha256(b"").hexdigest()


def test_data_id_ignores_dtype_and_shape_object_id_does_not() -> None:
    # the payload is content-addressed by its bytes; the object id covers dtype and shape too
    data = bytes(range(16))
    a = Array(dtype="uint8", shape=(16,), data=data)
    b = Array(dtype="float64", shape=(2,), data=data)
    assert a.data_id == b.data_id
    assert a.object_id != b.object_id
    assert a != b


def test_equality_by_value() -> None:
    a = Array(np.arange(6.0).reshape(2, 3))
    assert a == Array(np.arange(6.0).reshape(2, 3))
    assert a != Array(np.arange(6.0).reshape(3, 2))
    assert a != Array(np.arange(6.0).reshape(2, 3).astype(np.float32))
    assert a != Array(np.arange(1.0, 7.0).reshape(2, 3))
    assert a != "not an array"


def test_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(Array(np.zeros(1)))


def test_equality_is_bytewise_for_nan() -> None:
    a = Array(np.array([np.nan, 1.0]))
    assert a == Array(np.array([np.nan, 1.0]))


def test_equality_independent_of_buffer_format() -> None:
    values = np.array([np.nan, 1.0])
    typed = Array(dtype="float64", shape=(2,), data=memoryview(values))
    raw = Array(dtype="float64", shape=(2,), data=values.tobytes())
    assert typed == raw
    assert typed == typed  # reflexivity is the point


def test_repr_mentions_dtype_and_shape() -> None:
    text = repr(Array(np.zeros((2, 3), dtype=np.int16)))
    assert "int16" in text
    assert "(2, 3)" in text
    assert "12" in text


# -- torch is optional ---------------------------------------------------------------------------


def test_numpy_path_works_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now fails
    array = Array(np.arange(3.0))
    record = ArrayRecord([np.arange(3.0), np.ones((2, 2), dtype=np.int8)])
    assert [a.shape for a in record.to_numpy_ndarrays()] == [(3,), (2, 2)]
    np.testing.assert_array_equal(array.numpy(), [0.0, 1.0, 2.0])
    with pytest.raises(ImportError):
        array.torch()
    with pytest.raises(ImportError):
        record.to_torch_state_dict()


def test_torch_round_trip() -> None:
    import torch

    tensor = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    array = Array.from_torch_tensor(tensor)
    assert array.dtype == "float32"
    assert array.shape == (2, 3)
    back = array.torch()
    assert torch.equal(back, tensor)
    back[0, 0] = 99.0
    assert array.numpy()[0, 0] == 0.0


def test_torch_state_dict_round_trip() -> None:
    import torch

    state = {"w": torch.ones(2, 2), "b": torch.zeros(2, dtype=torch.int64)}
    record = ArrayRecord.from_torch_state_dict(state)
    assert list(record) == ["w", "b"]
    back = record.to_torch_state_dict()
    assert all(torch.equal(back[k], v) for k, v in state.items())


def test_torch_module_state_dict_loads_back() -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    record = ArrayRecord(model.state_dict())
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    fresh.load_state_dict(record.to_torch_state_dict())
    x = torch.randn(5, 4)
    assert torch.equal(model(x), fresh(x))


def test_torch_bfloat16_is_refused_clearly() -> None:
    import torch

    with pytest.raises(TypeError, match="bfloat16"):
        Array.from_torch_tensor(torch.ones(2, dtype=torch.bfloat16))


# -- property tests ------------------------------------------------------------------------------

numeric_dtypes = st.one_of(
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?", sizes=(16, 32, 64)),
    hnp.complex_number_dtypes(endianness="?", sizes=(64, 128)),
    hnp.boolean_dtypes(),
)
numeric_arrays = hnp.arrays(
    dtype=numeric_dtypes,
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
)


def assert_bit_exact(array: Array, original: np.ndarray[Any, Any]) -> None:
    assert array.dtype == original.dtype.name
    assert array.shape == original.shape
    assert bytes(array.data) == little_endian_bytes(original)
    back = array.numpy()
    assert back.dtype == original.dtype.newbyteorder("=")
    assert back.shape == original.shape
    assert back.tobytes() == little_endian_bytes(original)


@settings(max_examples=100, deadline=None)
@given(original=numeric_arrays)
def test_property_numpy_round_trip_bit_exact(original: np.ndarray[Any, Any]) -> None:
    assert_bit_exact(Array(original), original)


@settings(max_examples=75, deadline=None)
@given(original=numeric_arrays)
def test_property_proto_round_trip_inline(original: np.ndarray[Any, Any]) -> None:
    array = Array(original)
    proto = serde.array_to_proto(array)
    assert not proto.object_id
    assert proto.nbytes == array.nbytes
    wire = type(proto).FromString(proto.SerializeToString())
    back = serde.array_from_proto(wire)
    assert back == array
    assert_bit_exact(back, original)


@settings(max_examples=75, deadline=None)
@given(original=numeric_arrays, chunk_size=st.integers(min_value=1, max_value=64))
def test_property_proto_round_trip_via_objects(
    original: np.ndarray[Any, Any], chunk_size: int
) -> None:
    array = Array(original)
    proto = serde.array_to_proto(array, inline_limit=0)
    if array.nbytes == 0:
        assert not proto.object_id  # nothing to send separately
        back = serde.array_from_proto(proto)
    else:
        assert proto.object_id == array.data_id
        assert proto.data == b""
        frames = list(objects.encode_chunks(array.data_id, array.data, chunk_size))
        store = objects.assemble(frames)
        assert list(store) == [array.data_id]
        wire = type(proto).FromString(proto.SerializeToString())
        back = serde.array_from_proto(wire, store)
        assert back.data_id == array.data_id
    assert back == array
    assert_bit_exact(back, original)
