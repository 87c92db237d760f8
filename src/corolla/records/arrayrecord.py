"""`ArrayRecord`: an ordered mapping from names to `Array`s (a model's parameters)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, MutableMapping, MutableSequence, Sequence
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from corolla.records._inflatable import ArrayPayload, add_head, body_of, payload_buffers, sha256_hex
from corolla.records.array import Array, _from_value

if TYPE_CHECKING:  # pragma: no cover
    import torch

_INIT_ERROR = (
    "ArrayRecord() takes a list of NumPy arrays, a dict of Arrays (or NumPy arrays), or a torch "
    "state_dict, positionally or as numpy_ndarrays=, array_dict= or torch_state_dict= (one of "
    "them); keep_input= is keyword-only"
)


def _to_array(key: str, value: Any) -> Array:
    try:
        return _from_value(value)
    except TypeError:
        raise TypeError(
            f"ArrayRecord[{key!r}]: expected Array, numpy.ndarray or torch.Tensor, "
            f"got {type(value).__name__}"
        ) from None


class ArrayRecord(MutableMapping[str, Array]):
    """Ordered ``str -> Array``.

    Build it like Flower's: from a list of NumPy arrays (keys ``"0"``, ``"1"``, ...), a dict of
    `Array` (or NumPy) values, or a torch ``state_dict``, given positionally or by keyword.
    With ``keep_input=False`` the input gives up each entry as it is converted, so a large
    model is not held twice. Order is kept: a list goes back out as it came in.
    """

    def __init__(
        self,
        *args: Any,
        numpy_ndarrays: Sequence[npt.NDArray[Any]] | None = None,
        torch_state_dict: Mapping[str, torch.Tensor] | None = None,
        array_dict: Mapping[str, Any] | None = None,
        keep_input: bool = True,
    ) -> None:
        self._data: OrderedDict[str, Array] = OrderedDict()
        self._object_id: str | None = None
        self._dirty = True
        self._version = 0  # bumped on every change; lets a RecordDict see that this one changed
        given = [v for v in (*args, numpy_ndarrays, torch_state_dict, array_dict) if v is not None]
        if len(args) > 1 or len(given) > 1:
            raise TypeError(_INIT_ERROR)
        if not given:
            return
        source = given[0]
        if isinstance(source, Mapping):
            self._fill_from_mapping(source, keep_input)
        elif isinstance(source, (list, tuple)):
            self._fill_from_list(source, keep_input)
        else:
            raise TypeError(f"{_INIT_ERROR}; got {type(source).__name__}")

    def _fill_from_mapping(self, source: Mapping[str, Any], keep_input: bool) -> None:
        if keep_input or not isinstance(source, MutableMapping):
            for key, value in source.items():
                self[key] = value
            return
        for key in list(source):
            self[key] = source[key]
            del source[key]  # the caller gives up each entry once it is stored here

    def _fill_from_list(self, source: Sequence[Any], keep_input: bool) -> None:
        if keep_input or not isinstance(source, MutableSequence):
            for index, value in enumerate(source):
                self[str(index)] = value
            return
        for index in range(len(source)):
            self[str(index)] = source[index]
            source[index] = None  # the caller's array can go before the next one is copied
        source.clear()

    @classmethod
    def from_numpy_ndarrays(
        cls, ndarrays: Sequence[npt.NDArray[Any]], *, keep_input: bool = True
    ) -> ArrayRecord:
        return cls(numpy_ndarrays=ndarrays, keep_input=keep_input)

    @classmethod
    def from_torch_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], *, keep_input: bool = True
    ) -> ArrayRecord:
        return cls(torch_state_dict=state_dict, keep_input=keep_input)

    @classmethod
    def from_array_dict(
        cls, array_dict: Mapping[str, Array], *, keep_input: bool = True
    ) -> ArrayRecord:
        return cls(array_dict=array_dict, keep_input=keep_input)

    # -- mapping -------------------------------------------------------------------------------
    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"ArrayRecord keys must be str, got {type(key).__name__}")
        self._data[key] = _to_array(key, value)
        self._changed()

    def __getitem__(self, item: str) -> Array:
        return self._data[item]

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._changed()

    def _changed(self) -> None:
        self._dirty = True
        self._version += 1

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

    def copy(self) -> ArrayRecord:
        """A new record with the same arrays (they are immutable, so nothing is duplicated):
        adding or removing entries in either leaves the other as it is."""
        return ArrayRecord(array_dict=self._data)

    # -- conversions ---------------------------------------------------------------------------
    def to_numpy_ndarrays(self, *, keep_input: bool = True) -> list[npt.NDArray[Any]]:
        """The arrays in order, as new writable NumPy arrays independent of the record. With
        ``keep_input=False`` the record gives up each array as it is converted (it ends empty),
        so memory does not double."""
        if keep_input:
            return [array.numpy() for array in self._data.values()]
        out = []
        while self._data:
            _, array = self._data.popitem(last=False)
            out.append(array.numpy())
            del array  # drop the stored bytes before the next array is copied
        self._changed()
        return out

    def to_torch_state_dict(self, *, keep_input: bool = True) -> OrderedDict[str, torch.Tensor]:
        """The arrays as a torch ``state_dict`` of new tensors (requires torch); with
        ``keep_input=False`` the record gives up each array as it is converted."""
        import torch as _torch

        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for key in list(self._data):
            array = self._data[key] if keep_input else self._data.pop(key)
            out[key] = _torch.from_numpy(array.numpy())
        if not keep_input:
            self._changed()
        return out

    def count_bytes(self) -> int:
        """Total size of the arrays' data in bytes."""
        return sum(array.nbytes for array in self._data.values())

    # -- inflatable object ---------------------------------------------------------------------
    @property
    def object_id(self) -> str:
        """The sha256 hex digest of `deflate` (cached until the record changes)."""
        if self._object_id is None or self._dirty:
            self._object_id = sha256_hex(self.deflate())
        self._dirty = False
        return self._object_id

    @property
    def is_dirty(self) -> bool:
        """Whether the record changed since its `object_id` was last computed."""
        return self._dirty

    @is_dirty.setter
    def is_dirty(self, value: bool) -> None:
        self._dirty = bool(value)

    @property
    def children(self) -> dict[str, ArrayPayload]:
        """The payloads of the record's large arrays, by data id."""
        from corolla.records import serde

        return serde.payloads([self])

    def deflate(self) -> bytes:
        from corolla.records import serde

        body = serde.array_record_to_proto(self).SerializeToString(deterministic=True)
        return add_head("ArrayRecord", body)

    @classmethod
    def inflate(
        cls, object_content: bytes, children: Mapping[str, object] | None = None
    ) -> ArrayRecord:
        from corolla.proto.v1 import records_pb2 as rpb
        from corolla.records import serde

        proto = rpb.ArrayRecord.FromString(body_of(object_content, "ArrayRecord"))
        objects = payload_buffers(children, serde.array_record_refs(proto))
        return serde.array_record_from_proto(proto, objects)
