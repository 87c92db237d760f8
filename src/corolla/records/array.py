"""`Array`: one tensor as dtype, shape and raw little-endian C-order bytes. No pickle, ever."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from corolla.common.errors import InvalidArgument

if TYPE_CHECKING:  # pragma: no cover
    import torch

Buffer = bytes | bytearray | memoryview

_NUMERIC_KINDS = frozenset("biufc")
_LITTLE = sys.byteorder == "little"


def _wire_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The little-endian form of ``dtype`` (what travels on the wire)."""
    return dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype


def check_dtype(name: str) -> np.dtype[Any]:
    """Parse a dtype name as stored in an `Array`, refusing anything that is not numeric."""
    try:
        dtype = np.dtype(name)
    except TypeError as exc:
        raise InvalidArgument(f"unknown dtype {name!r}") from exc
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise InvalidArgument(f"dtype {name!r} is not a numeric or bool dtype")
    return dtype


class Array:
    """An immutable tensor: ``dtype`` (NumPy name), ``shape`` and raw ``data``.

    Build one from a NumPy array (``Array(ndarray)`` or `Array.from_numpy_ndarray`), a torch
    tensor (`Array.from_torch_tensor`), or from its parts (``Array(dtype=, shape=, data=)``).
    The data is always little-endian and C-ordered, so any machine reads it back the same way.
    """

    __slots__ = ("_data", "_dtype", "_object_id", "_shape")

    stype = "raw"  # serialization type; kept for API familiarity, Corolla has only one

    _dtype: str
    _shape: tuple[int, ...]
    _data: Buffer
    _object_id: str | None

    def __init__(
        self,
        ndarray: npt.NDArray[Any] | None = None,
        /,
        *,
        dtype: str | None = None,
        shape: Sequence[int] | None = None,
        data: Buffer | None = None,
    ) -> None:
        if ndarray is not None:
            if dtype is not None or shape is not None or data is not None:
                raise TypeError("give either an ndarray or dtype/shape/data, not both")
            if not isinstance(ndarray, np.ndarray):
                raise TypeError(f"Array() takes a numpy.ndarray, got {type(ndarray).__name__}")
            other = Array.from_numpy_ndarray(ndarray)
            self._dtype, self._shape, self._data = other._dtype, other._shape, other._data
            self._object_id = None
            return
        if dtype is None or shape is None or data is None:
            raise TypeError("Array() needs an ndarray, or all of dtype=, shape= and data=")
        np_dtype = check_dtype(dtype)
        dims = tuple(int(d) for d in shape)
        if any(d < 0 for d in dims):
            raise InvalidArgument(f"negative dimension in shape {dims}")
        view = memoryview(data)
        expected = int(np.prod(dims, dtype=np.int64)) * np_dtype.itemsize
        if view.nbytes != expected:
            raise InvalidArgument(
                f"Array data has {view.nbytes} bytes but dtype {dtype} and shape {dims} "
                f"need {expected}"
            )
        self._dtype = np_dtype.name
        self._shape = dims
        if isinstance(data, bytes):
            self._data = data
        elif view.readonly and view.c_contiguous:
            self._data = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        else:  # writable or strided buffers are copied: an Array never changes under its id
            self._data = view.tobytes()
        self._object_id = None

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def from_numpy_ndarray(cls, ndarray: npt.NDArray[Any]) -> Array:
        """Copy ``ndarray`` (any layout or byte order) into a new `Array`."""
        dtype = check_dtype(ndarray.dtype.str)
        wire = _wire_dtype(dtype)
        contiguous = np.ascontiguousarray(ndarray, dtype=wire)
        data = contiguous.tobytes()  # a copy: later edits of the caller's array cannot leak in
        return cls(dtype=dtype.name, shape=ndarray.shape, data=data)

    @classmethod
    def from_torch_tensor(cls, tensor: torch.Tensor) -> Array:
        """Copy a torch tensor (moved to CPU, detached) into a new `Array`."""
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype == "bfloat16":
            raise TypeError("bfloat16 tensors have no NumPy dtype: convert with .float() first")
        return cls.from_numpy_ndarray(tensor.detach().cpu().numpy())

    # -- accessors -----------------------------------------------------------------------------
    @property
    def dtype(self) -> str:
        return self._dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def data(self) -> Buffer:
        """The raw little-endian, C-order bytes (read-only)."""
        return self._data

    @property
    def nbytes(self) -> int:
        return memoryview(self._data).nbytes

    @property
    def object_id(self) -> str:
        """Content id: the sha256 hex digest of the raw data (computed once, then cached)."""
        if self._object_id is None:
            self._object_id = hashlib.sha256(self._data).hexdigest()
        return self._object_id

    def _set_known_object_id(self, object_id: str) -> None:
        """Record an id already verified elsewhere (e.g. by the wire decoder)."""
        self._object_id = object_id

    def numpy(self) -> npt.NDArray[Any]:
        """The array as NumPy, without copying: a read-only view (call ``.copy()`` to edit)."""
        wire = _wire_dtype(np.dtype(self._dtype))
        arr = np.frombuffer(self._data, dtype=wire).reshape(self._shape)
        if not _LITTLE and wire.byteorder == "<":  # pragma: no cover - big-endian hosts only
            arr = arr.astype(wire.newbyteorder("="))
        arr.flags.writeable = False
        return arr

    def torch(self) -> torch.Tensor:
        """The array as a new torch tensor (requires torch)."""
        import torch as _torch

        return _torch.from_numpy(self.numpy().copy())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Array):
            return NotImplemented
        return (
            self._dtype == other._dtype
            and self._shape == other._shape
            and memoryview(self._data).cast("B") == memoryview(other._data).cast("B")
        )

    __hash__ = None  # type: ignore[assignment]  # equality is by value; arrays are not dict keys

    def __repr__(self) -> str:
        return f"Array(dtype={self._dtype!r}, shape={self._shape}, nbytes={self.nbytes})"
