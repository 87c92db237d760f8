"""`MetricRecord` and `ConfigRecord`: str-keyed mappings whose values are type-checked on entry."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, Self, TypeVar, cast

import numpy as np

from corolla.proto.v1 import records_pb2 as rpb
from corolla.records._inflatable import add_head, body_of, sha256_hex

MetricScalar = int | float
MetricValue = MetricScalar | list[int] | list[float]
ConfigScalar = int | float | str | bool | bytes
ConfigValue = ConfigScalar | list[int] | list[float] | list[str] | list[bool] | list[bytes]

V = TypeVar("V")


def _plain_scalar(value: Any) -> Any:
    """NumPy scalars become the matching Python type; everything else passes through."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_key(record: str, key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"{record} keys must be str, got {type(key).__name__}")
    return key


def _check_value(record: str, key: str, value: Any, scalars: tuple[type, ...]) -> Any:
    value = _plain_scalar(value)
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        items = [_plain_scalar(v) for v in value]
        kinds = {type(v) for v in items}
        if len(kinds) > 1:
            names = ", ".join(sorted(k.__name__ for k in kinds))
            raise TypeError(f"{record}[{key!r}]: list items must share one type, got {names}")
        if kinds and next(iter(kinds)) not in scalars:
            raise TypeError(
                f"{record}[{key!r}]: list of {next(iter(kinds)).__name__} is not allowed "
                f"(allowed item types: {_names(scalars)})"
            )
        return items
    if type(value) not in scalars:
        raise TypeError(
            f"{record}[{key!r}]: {type(value).__name__} is not allowed "
            f"(allowed: {_names(scalars)} and lists of them)"
        )
    return value


def _names(types: tuple[type, ...]) -> str:
    return ", ".join(t.__name__ for t in types)


class _CheckedRecord(MutableMapping[str, V]):
    """A dict that type-checks keys and values on every assignment."""

    _scalars: tuple[type, ...] = ()

    def __init__(self) -> None:
        self._data: dict[str, V] = {}

    def _fill(self, source: Mapping[str, Any] | None, keep_input: bool) -> None:
        if not source:
            return
        if not isinstance(source, Mapping):
            raise TypeError(f"{type(self).__name__}() takes a dict, got {type(source).__name__}")
        if keep_input or not isinstance(source, MutableMapping):
            for key, value in source.items():
                self[key] = value
            return
        for key in list(source):
            self[key] = source[key]
            del source[key]  # the caller gives up each entry once it is stored here

    def __setitem__(self, key: str, value: Any) -> None:
        name = type(self).__name__
        key = _check_key(name, key)
        self._data[key] = _check_value(name, key, value, self._scalars)

    def __getitem__(self, item: str) -> Any:
        """Typed ``Any`` so that ``float(config["lr"])`` reads naturally in app code."""
        return self._data[item]

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _CheckedRecord):
            return type(self) is type(other) and self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"

    def copy(self) -> Self:
        """A new record with the same values (lists copied): editing one leaves the other."""
        out = type(self).__new__(type(self))
        _CheckedRecord.__init__(out)
        for key, value in self._data.items():
            out._data[key] = cast(V, list(value)) if isinstance(value, list) else value
        return out

    def count_bytes(self) -> int:
        """Approximate payload size: keys plus values."""
        total = 0
        for key, value in self._data.items():
            total += len(key.encode())
            items = value if isinstance(value, list) else [value]
            for item in items:
                total += len(item) if isinstance(item, (str, bytes)) else 8
        return total

    # -- inflatable object ---------------------------------------------------------------------
    @property
    def object_id(self) -> str:
        """The sha256 hex digest of `deflate` (computed each time: values may be edited in
        place, e.g. a list appended to)."""
        return sha256_hex(self.deflate())

    @property
    def is_dirty(self) -> bool:
        """Always true: in-place edits of list values cannot be seen, so the id is recomputed."""
        return True

    @property
    def children(self) -> None:
        """Metric and config records have no child objects."""
        return None

    def deflate(self) -> bytes:
        from corolla.records import serde

        proto = (
            serde.metric_record_to_proto(self)
            if isinstance(self, MetricRecord)
            else serde.config_record_to_proto(self)
        )
        return add_head(type(self).__name__, proto.SerializeToString(deterministic=True))

    @classmethod
    def inflate(cls, object_content: bytes, children: Mapping[str, object] | None = None) -> Self:
        from corolla.records import serde

        if children:
            raise ValueError(f"a {cls.__name__} has no children")
        body = body_of(object_content, cls.__name__)
        if issubclass(cls, MetricRecord):
            record: Any = serde.metric_record_from_proto(rpb.MetricRecord.FromString(body))
        else:
            record = serde.config_record_from_proto(rpb.ConfigRecord.FromString(body))
        return cast(Self, record)


class MetricRecord(_CheckedRecord[MetricValue]):
    """Metrics: int, float, or a list of either (one type per list).

    ``keep_input=False`` removes each entry from ``metric_dict`` once it is stored here.
    """

    _scalars = (int, float)

    def __init__(
        self, metric_dict: Mapping[str, Any] | None = None, keep_input: bool = True
    ) -> None:
        super().__init__()
        self._fill(metric_dict, keep_input)


class ConfigRecord(_CheckedRecord[ConfigValue]):
    """Configuration: int, float, str, bool, bytes, or a list of one of them.

    ``keep_input=False`` removes each entry from ``config_dict`` once it is stored here.
    """

    _scalars = (int, float, str, bool, bytes)

    def __init__(
        self, config_dict: Mapping[str, Any] | None = None, keep_input: bool = True
    ) -> None:
        super().__init__()
        self._fill(config_dict, keep_input)
