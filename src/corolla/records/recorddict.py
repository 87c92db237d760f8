"""`RecordDict`: the content of a `Message` and the state of a `Context`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, TypeVar

from corolla.records.arrayrecord import ArrayRecord
from corolla.records.typed import ConfigRecord, MetricRecord

Record = ArrayRecord | MetricRecord | ConfigRecord
R = TypeVar("R", ArrayRecord, MetricRecord, ConfigRecord)


class RecordDict(MutableMapping[str, Record]):
    """``str -> ArrayRecord | MetricRecord | ConfigRecord``, with typed views of each kind."""

    def __init__(self, records: Mapping[str, Record] | None = None) -> None:
        self._data: dict[str, Record] = {}
        for key, value in (records or {}).items():
            self[key] = value

    def __setitem__(self, key: str, value: Record) -> None:
        if not isinstance(key, str):
            raise TypeError(f"RecordDict keys must be str, got {type(key).__name__}")
        if not isinstance(value, (ArrayRecord, MetricRecord, ConfigRecord)):
            raise TypeError(
                f"RecordDict[{key!r}]: expected ArrayRecord, MetricRecord or ConfigRecord, "
                f"got {type(value).__name__}"
            )
        self._data[key] = value

    def __getitem__(self, key: str) -> Any:
        """The record under ``key``, typed ``Any`` so app code reads naturally
        (``msg.content["arrays"].to_numpy_ndarrays()``); the typed views give precise types."""
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordDict):
            return NotImplemented
        return self._data == other._data

    def __repr__(self) -> str:
        return f"RecordDict({self._data!r})"

    def _of_kind(self, kind: type[R]) -> dict[str, R]:
        return {k: v for k, v in self._data.items() if isinstance(v, kind)}

    @property
    def array_records(self) -> dict[str, ArrayRecord]:
        """The `ArrayRecord` entries (a snapshot; assign through the RecordDict itself)."""
        return self._of_kind(ArrayRecord)

    @property
    def metric_records(self) -> dict[str, MetricRecord]:
        return self._of_kind(MetricRecord)

    @property
    def config_records(self) -> dict[str, ConfigRecord]:
        return self._of_kind(ConfigRecord)

    def count_bytes(self) -> int:
        return sum(len(k.encode()) + v.count_bytes() for k, v in self._data.items())
