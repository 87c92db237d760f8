"""`RecordDict`: the content of a `Message` and the state of a `Context`."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, Generic, TypeVar

from corolla.records._inflatable import ArrayPayload, add_head, body_of, payload_buffers, sha256_hex
from corolla.records.arrayrecord import ArrayRecord
from corolla.records.typed import ConfigRecord, MetricRecord

log = logging.getLogger(__name__)

Record = ArrayRecord | MetricRecord | ConfigRecord
R = TypeVar("R", ArrayRecord, MetricRecord, ConfigRecord)
_RECORD_TYPES = (ArrayRecord, MetricRecord, ConfigRecord)
_warned: set[str] = set()


def _warn_once(name: str, text: str) -> None:
    if name not in _warned:
        _warned.add(name)
        log.warning(text)


class RecordView(MutableMapping[str, R], Generic[R]):
    """The records of one kind in a `RecordDict`: reads and writes go to the RecordDict."""

    def __init__(self, owner: RecordDict, kind: type[R]) -> None:
        self._owner = owner
        self._kind: type[R] = kind

    def __getitem__(self, item: str) -> R:
        record: Record = self._owner._data[item]
        if not isinstance(record, self._kind):
            raise KeyError(item)
        return record

    def __setitem__(self, key: str, value: R) -> None:
        if not isinstance(value, self._kind):
            raise TypeError(
                f"{self._kind.__name__} view: expected {self._kind.__name__}, "
                f"got {type(value).__name__}"
            )
        self._owner[key] = value

    def __delitem__(self, key: str) -> None:
        self[key]  # KeyError unless the key holds a record of this kind
        del self._owner[key]

    def __iter__(self) -> Iterator[str]:
        kind = self._kind
        return iter([k for k, v in self._owner._data.items() if isinstance(v, kind)])

    def __len__(self) -> int:
        return sum(isinstance(v, self._kind) for v in self._owner._data.values())

    def __repr__(self) -> str:
        return repr(dict(self))


class RecordDict(MutableMapping[str, Record]):
    """``str -> ArrayRecord | MetricRecord | ConfigRecord``, with a view of each kind
    (`array_records`, `metric_records`, `config_records`) that writes through."""

    def __init__(
        self,
        records: Mapping[str, Record] | None = None,
        *,
        parameters_records: Mapping[str, ArrayRecord] | None = None,
        metrics_records: Mapping[str, MetricRecord] | None = None,
        configs_records: Mapping[str, ConfigRecord] | None = None,
    ) -> None:
        self._data: dict[str, Record] = {}
        self._object_id: str | None = None
        self._dirty = True
        self._stamp: tuple[int, ...] = ()  # versions of its ArrayRecords at the last object_id
        legacy = (parameters_records, metrics_records, configs_records)
        if any(part is not None for part in legacy):
            log.warning(
                "RecordDict(parameters_records=, metrics_records=, configs_records=) is "
                "deprecated: pass every record in `records`"
            )
        for part in (records, *legacy):
            for key, value in (part or {}).items():
                self[key] = value

    def __setitem__(self, key: str, value: Record) -> None:
        if not isinstance(key, str):
            raise TypeError(f"RecordDict keys must be str, got {type(key).__name__}")
        if not isinstance(value, _RECORD_TYPES):
            raise TypeError(
                f"RecordDict[{key!r}]: expected ArrayRecord, MetricRecord or ConfigRecord, "
                f"got {type(value).__name__}"
            )
        previous = self._data.get(key)
        if previous is not None and type(previous) is not type(value):
            log.warning(
                "RecordDict[%r]: a %s replaced a %s",
                key,
                type(value).__name__,
                type(previous).__name__,
            )
        self._data[key] = value
        self._dirty = True

    def __getitem__(self, item: str) -> Any:
        """The record under ``item``, typed ``Any`` so app code reads naturally
        (``msg.content["arrays"].to_numpy_ndarrays()``); the typed views give precise types."""
        return self._data[item]

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._dirty = True

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

    def copy(self) -> RecordDict:
        """A new RecordDict holding a `copy` of each record: editing the copy (its entries,
        or entries of its records) leaves this one as it is. Arrays, which are immutable, are
        shared rather than duplicated."""
        return RecordDict({key: record.copy() for key, record in self._data.items()})

    @property
    def array_records(self) -> RecordView[ArrayRecord]:
        """The `ArrayRecord` entries; assigning or deleting through the view changes this
        RecordDict."""
        return RecordView(self, ArrayRecord)

    @property
    def metric_records(self) -> RecordView[MetricRecord]:
        """The `MetricRecord` entries (a view that writes through)."""
        return RecordView(self, MetricRecord)

    @property
    def config_records(self) -> RecordView[ConfigRecord]:
        """The `ConfigRecord` entries (a view that writes through)."""
        return RecordView(self, ConfigRecord)

    @property
    def parameters_records(self) -> RecordView[ArrayRecord]:
        """Deprecated name of `array_records`."""
        _warn_once(
            "parameters_records", "RecordDict.parameters_records is deprecated: use array_records"
        )
        return self.array_records

    @property
    def metrics_records(self) -> RecordView[MetricRecord]:
        """Deprecated name of `metric_records`."""
        _warn_once(
            "metrics_records", "RecordDict.metrics_records is deprecated: use metric_records"
        )
        return self.metric_records

    @property
    def configs_records(self) -> RecordView[ConfigRecord]:
        """Deprecated name of `config_records`."""
        _warn_once(
            "configs_records", "RecordDict.configs_records is deprecated: use config_records"
        )
        return self.config_records

    def count_bytes(self) -> int:
        return sum(len(k.encode()) + v.count_bytes() for k, v in self._data.items())

    # -- inflatable object ---------------------------------------------------------------------
    @property
    def object_id(self) -> str:
        """The sha256 hex digest of `deflate` (cached while nothing in it changes)."""
        if self._object_id is None or self.is_dirty:
            self._object_id = sha256_hex(self.deflate())
            self._stamp = self._versions()
        self._dirty = False
        return self._object_id

    @property
    def is_dirty(self) -> bool:
        """Whether this RecordDict or one of its records changed since `object_id` (metric
        and config records always count as changed: their lists may be edited in place)."""
        if self._dirty or self._versions() != self._stamp:
            return True
        return any(not isinstance(r, ArrayRecord) for r in self._data.values())

    def _versions(self) -> tuple[int, ...]:
        return tuple(r._version for r in self._data.values() if isinstance(r, ArrayRecord))

    @property
    def children(self) -> dict[str, ArrayPayload]:
        """The payloads of its records' large arrays, by data id."""
        from corolla.records import serde

        return serde.payloads(r for r in self._data.values() if isinstance(r, ArrayRecord))

    def deflate(self) -> bytes:
        from corolla.records import serde

        body = serde.record_dict_to_proto(self).SerializeToString(deterministic=True)
        return add_head("RecordDict", body)

    @classmethod
    def inflate(
        cls, object_content: bytes, children: Mapping[str, object] | None = None
    ) -> RecordDict:
        from corolla.proto.v1 import records_pb2 as rpb
        from corolla.records import serde

        proto = rpb.RecordDict.FromString(body_of(object_content, "RecordDict"))
        objects = payload_buffers(children, serde.record_dict_refs(proto))
        return serde.record_dict_from_proto(proto, objects)
