"""`MetricRecord` and `ConfigRecord`: str-keyed mappings whose values are type-checked on entry."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, TypeVar

import numpy as np

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

    def __init__(self, data: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        self._data: dict[str, V] = {}
        for key, value in {**(data or {}), **kwargs}.items():
            self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        name = type(self).__name__
        key = _check_key(name, key)
        self._data[key] = _check_value(name, key, value, self._scalars)

    def __getitem__(self, key: str) -> Any:
        """Typed ``Any`` so that ``float(config["lr"])`` reads naturally in app code."""
        return self._data[key]

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

    def count_bytes(self) -> int:
        """Approximate payload size: keys plus values."""
        total = 0
        for key, value in self._data.items():
            total += len(key.encode())
            items = value if isinstance(value, list) else [value]
            for item in items:
                total += len(item) if isinstance(item, (str, bytes)) else 8
        return total


class MetricRecord(_CheckedRecord[MetricValue]):
    """Metrics: int, float, or a list of either (one type per list)."""

    _scalars = (int, float)


class ConfigRecord(_CheckedRecord[ConfigValue]):
    """Configuration: int, float, str, bool, bytes, or a list of one of them."""

    _scalars = (int, float, str, bool, bytes)
