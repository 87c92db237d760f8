"""`ArrayRecord`: an ordered mapping from names to `Array`s (a model's parameters)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from corolla.records.array import Array

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _is_torch_tensor(value: object) -> bool:
    module = type(value).__module__
    return module.startswith("torch") and hasattr(value, "detach")


def _to_array(key: str, value: Any) -> Array:
    if isinstance(value, Array):
        return value
    if isinstance(value, np.ndarray):
        return Array.from_numpy_ndarray(value)
    if _is_torch_tensor(value):
        return Array.from_torch_tensor(value)
    raise TypeError(
        f"ArrayRecord[{key!r}]: expected Array, numpy.ndarray or torch.Tensor, "
        f"got {type(value).__name__}"
    )


class ArrayRecord(MutableMapping[str, Array]):
    """Ordered ``str -> Array``.

    Build it from a list of NumPy arrays (keys ``"0"``, ``"1"``, ...), a dict of NumPy arrays or
    `Array` objects, or a torch ``state_dict``. Order is kept: a list goes back out as it came in.
    """

    def __init__(
        self,
        arrays: Sequence[npt.NDArray[Any]] | Mapping[str, Any] | None = None,
    ) -> None:
        self._data: OrderedDict[str, Array] = OrderedDict()
        if arrays is None:
            return
        if isinstance(arrays, Mapping):
            for key, value in arrays.items():
                self[key] = value
        elif isinstance(arrays, (list, tuple)):
            for index, value in enumerate(arrays):
                self[str(index)] = value
        else:
            raise TypeError(
                "ArrayRecord() takes a list of ndarrays, a dict of arrays or a torch state_dict, "
                f"got {type(arrays).__name__}"
            )

    @classmethod
    def from_numpy_ndarrays(cls, ndarrays: Sequence[npt.NDArray[Any]]) -> ArrayRecord:
        return cls(list(ndarrays))

    @classmethod
    def from_torch_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> ArrayRecord:
        return cls(dict(state_dict))

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"ArrayRecord keys must be str, got {type(key).__name__}")
        self._data[key] = _to_array(key, value)

    def __getitem__(self, key: str) -> Array:
        return self._data[key]

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArrayRecord):
            return NotImplemented
        return list(self._data.items()) == list(other._data.items())

    def __repr__(self) -> str:
        inner = ", ".join(f"{k!r}: {v!r}" for k, v in self._data.items())
        return f"ArrayRecord({{{inner}}})"

    def to_numpy_ndarrays(self) -> list[npt.NDArray[Any]]:
        """The arrays in order, as read-only NumPy views (no copy)."""
        return [array.numpy() for array in self._data.values()]

    def to_torch_state_dict(self) -> OrderedDict[str, torch.Tensor]:
        """The arrays as a torch ``state_dict`` (new tensors; requires torch)."""
        return OrderedDict((key, array.torch()) for key, array in self._data.items())

    def count_bytes(self) -> int:
        """Total size of the arrays' data in bytes."""
        return sum(array.nbytes for array in self._data.values())
