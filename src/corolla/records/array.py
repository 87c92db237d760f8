"""`Array`: one tensor as dtype, shape and raw little-endian C-order bytes. No pickle, ever."""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from corolla.common.errors import InvalidArgument
from corolla.records import _spool
from corolla.records._inflatable import (
    INLINE_LIMIT,
    ArrayPayload,
    Buffer,
    add_head,
    body_of,
    payload_buffers,
    sha256_hex,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

_NUMERIC_KINDS = frozenset("biufc")
_LITTLE = sys.byteorder == "little"
RAW = "raw"  # Corolla's stype: the bare little-endian C-order bytes
NPY = "numpy.ndarray"  # Flower's stype: an .npy file (read on entry, never pickled)


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


def _is_torch_tensor(value: object) -> bool:
    torch_module = sys.modules.get("torch")
    return torch_module is not None and isinstance(value, torch_module.Tensor)


def _from_npy(data: Buffer) -> npt.NDArray[Any]:
    try:
        loaded = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
    except ValueError as exc:
        raise InvalidArgument(f"data is not a valid {NPY} (.npy) buffer: {exc}") from exc
    if not isinstance(loaded, np.ndarray):
        raise InvalidArgument(f"data is not a single {NPY} (.npy) array")
    return loaded


class Array:
    """An immutable tensor: ``dtype`` (NumPy name), ``shape`` and raw ``data``.

    Build one like Flower's: ``Array(ndarray)`` (a NumPy scalar or 0-d array is fine),
    ``Array(torch_tensor)``, or ``Array(dtype, shape, stype, data)`` (``stype`` may be left out;
    Flower's ``"numpy.ndarray"`` data is read and stored raw). The data is always little-endian
    and C-ordered, so any machine reads it back the same way. `numpy` gives the user a writable
    copy; `view` gives internal code a read-only view of the stored bytes.
    """

    __slots__ = ("_data", "_data_id", "_dirty", "_dtype", "_object_id", "_shape")

    stype = RAW

    _dtype: str
    _shape: tuple[int, ...]
    _data: Buffer
    _data_id: str | None
    _object_id: str | None
    _dirty: bool

    def __init__(
        self,
        *args: Any,
        dtype: str | None = None,
        shape: Sequence[int] | None = None,
        stype: str | None = None,
        data: Buffer | None = None,
        ndarray: npt.NDArray[Any] | None = None,
        torch_tensor: torch.Tensor | None = None,
    ) -> None:
        self._data_id = self._object_id = None
        self._dirty = True
        parts = (dtype, shape, stype, data)
        given = [v for v in (*parts, ndarray, torch_tensor) if v is not None]
        if len(args) == 1 and not given:
            self._adopt(_from_value(args[0]))
        elif not args and ndarray is not None and len(given) == 1:
            self._adopt(_from_value(ndarray, accept_torch=False))
        elif not args and torch_tensor is not None and len(given) == 1:
            if not _is_torch_tensor(torch_tensor):
                raise TypeError(f"torch_tensor= takes a torch.Tensor, got {_kind(torch_tensor)}")
            self._adopt(Array.from_torch_tensor(torch_tensor))
        elif len(args) in (0, 4) and ndarray is None and torch_tensor is None:
            if args and any(v is not None for v in parts):
                raise TypeError("give dtype, shape, stype and data by position or by name")
            dtype, shape, stype, data = args or parts
            if dtype is None or shape is None or data is None:
                raise TypeError("Array() needs an ndarray, a tensor, or dtype, shape and data")
            self._set_parts(dtype, shape, RAW if stype is None else stype, data)
        else:
            raise TypeError(
                "Array() takes one NumPy array or torch tensor, or dtype, shape, stype and data"
            )

    def _adopt(self, other: Array) -> None:
        self._dtype, self._shape, self._data = other._dtype, other._shape, other._data

    def _set_parts(self, dtype: str, shape: Sequence[int], stype: str, data: Buffer) -> None:
        if stype == NPY:
            loaded = Array.from_numpy_ndarray(_from_npy(data))
            if (loaded.dtype, loaded.shape) != (check_dtype(dtype).name, tuple(shape)):
                raise InvalidArgument(
                    f"the {NPY} data holds {loaded.dtype} {loaded.shape}, "
                    f"not {dtype} {tuple(shape)}"
                )
            self._adopt(loaded)
            return
        if stype != RAW:
            raise InvalidArgument(f"stype {stype!r} unknown: Corolla reads {RAW!r} and {NPY!r}")
        if not isinstance(dtype, str):
            raise TypeError(f"dtype must be a str, got {_kind(dtype)}")
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

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def from_numpy_ndarray(cls, ndarray: npt.NDArray[Any]) -> Array:
        """Copy ``ndarray`` (any layout or byte order) into a new `Array`."""
        if not isinstance(ndarray, np.ndarray):
            raise TypeError(f"expected a numpy.ndarray, got {_kind(ndarray)}")
        dtype = check_dtype(ndarray.dtype.str)
        contiguous = np.ascontiguousarray(ndarray, dtype=_wire_dtype(dtype))
        # A copy, so that later edits of the caller's array cannot leak in; a large one is
        # made in the spool (see `_spool`) when the process has one.
        spooled = _spool.allocate(contiguous.nbytes)
        if spooled is None:
            data: Buffer = contiguous.tobytes()
        else:
            np.frombuffer(spooled, dtype=np.uint8)[...] = contiguous.reshape(-1).view(np.uint8)
            data = spooled.toreadonly()
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
    def data_id(self) -> str:
        """The sha256 hex digest of the raw data: the id its bytes travel under (cached)."""
        if self._data_id is None:
            self._data_id = sha256_hex(self._data)
        return self._data_id

    def _set_known_data_id(self, data_id: str) -> None:
        """Record a data id already verified elsewhere (e.g. by the wire decoder)."""
        self._data_id = data_id

    def view(self) -> npt.NDArray[Any]:
        """The array as a read-only NumPy view of the stored bytes (no copy): for code that
        only reads. Apps get their own arrays from `numpy`."""
        wire = _wire_dtype(np.dtype(self._dtype))
        arr = np.frombuffer(self._data, dtype=wire).reshape(self._shape)
        if not _LITTLE and wire.byteorder == "<":  # pragma: no cover - big-endian hosts only
            arr = arr.astype(wire.newbyteorder("="))
        arr.flags.writeable = False
        return arr

    def numpy(self) -> npt.NDArray[Any]:
        """The array as a new, writable NumPy array (a copy: editing it leaves the Array as it
        is)."""
        return np.array(self.view(), copy=True)

    def torch(self) -> torch.Tensor:
        """The array as a new torch tensor (requires torch)."""
        import torch as _torch

        return _torch.from_numpy(self.numpy())

    # -- inflatable object ---------------------------------------------------------------------
    @property
    def object_id(self) -> str:
        """The sha256 hex digest of `deflate` (computed once: an Array never changes)."""
        if self._object_id is None or self._dirty:
            self._object_id = sha256_hex(self.deflate())
        self._dirty = False
        return self._object_id

    @property
    def is_dirty(self) -> bool:
        """Whether `object_id` has to be computed (again)."""
        return self._dirty

    @is_dirty.setter
    def is_dirty(self, value: bool) -> None:
        self._dirty = bool(value)

    @property
    def children(self) -> dict[str, ArrayPayload]:
        """The payload that travels next to the deflated array: none for an inline array, the
        raw bytes (by `data_id`) for a large one."""
        return dict(self.slice_array())

    def slice_array(self) -> list[tuple[str, ArrayPayload]]:
        """The children as ``(id, payload)`` pairs (Corolla sends a payload whole, in chunks of
        the transfer layer, so there is at most one)."""
        if self.nbytes <= INLINE_LIMIT:
            return []
        return [(self.data_id, ArrayPayload(self._data, self.data_id))]

    def deflate(self) -> bytes:
        from corolla.records import serde

        return add_head("Array", serde.array_to_proto(self).SerializeToString(deterministic=True))

    @classmethod
    def inflate(cls, object_content: bytes, children: Mapping[str, object] | None = None) -> Array:
        from corolla.proto.v1 import records_pb2 as rpb
        from corolla.records import serde

        proto = rpb.Array.FromString(body_of(object_content, "Array"))
        objects = payload_buffers(children, [proto.object_id] if proto.object_id else [])
        return serde.array_from_proto(proto, objects)

    # -- value semantics -----------------------------------------------------------------------
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


def _kind(value: object) -> str:
    return type(value).__name__


def _from_value(value: Any, *, accept_torch: bool = True) -> Array:
    """An `Array` from one NumPy array, NumPy scalar or (``accept_torch``) torch tensor."""
    if isinstance(value, Array):
        return value
    if isinstance(value, np.ndarray):
        return Array.from_numpy_ndarray(value)
    if isinstance(value, np.generic):
        return Array.from_numpy_ndarray(np.asarray(value))
    if accept_torch and _is_torch_tensor(value):
        return Array.from_torch_tensor(value)
    raise TypeError(
        f"Array() takes a NumPy array, a NumPy scalar or a torch tensor, got {_kind(value)}"
    )
