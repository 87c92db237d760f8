"""What `deflate`/`inflate` share: the object head, payload leaves and the children check.

Corolla's deflated form of a record, a `RecordDict` or a `Message` is its wire protobuf (see
`corolla.records.serde`) behind a short head naming the type. Arrays up to `INLINE_LIMIT`
bytes sit inside it; a larger array is referenced by the sha256 of its raw bytes and its data
is a child object, an `ArrayPayload`. So an object's ``children`` are exactly the payloads that
travel next to it on the wire, and ``object_id`` is the sha256 hex of the deflated bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

Buffer = bytes | bytearray | memoryview

INLINE_LIMIT = 64 * 1024  # arrays up to this size travel inside the message
_HEAD_END = b"\x00"


def sha256_hex(data: Buffer) -> str:
    return hashlib.sha256(data).hexdigest()


def add_head(obj_type: str, body: bytes) -> bytes:
    """``body`` behind a head naming ``obj_type``."""
    return obj_type.encode("ascii") + _HEAD_END + body


def body_of(object_content: bytes, obj_type: str) -> bytes:
    """The body of ``object_content``; `ValueError` unless it was deflated from ``obj_type``."""
    head, sep, body = bytes(object_content).partition(_HEAD_END)
    if not sep or head != obj_type.encode("ascii"):
        found = head.decode("ascii", "replace") if sep else "no type"
        raise ValueError(f"the object content is of {found!r}, not {obj_type!r}")
    return body


class ArrayPayload:
    """The raw bytes of one large array: a leaf object whose id is the sha256 of its bytes."""

    __slots__ = ("_data", "_object_id")

    def __init__(self, data: Buffer, object_id: str | None = None) -> None:
        self._data = data
        self._object_id = object_id

    @property
    def data(self) -> Buffer:
        return self._data

    @property
    def object_id(self) -> str:
        if self._object_id is None:
            self._object_id = sha256_hex(self._data)
        return self._object_id

    @property
    def children(self) -> None:
        return None

    @property
    def is_dirty(self) -> bool:
        return False  # immutable: its id never changes

    def deflate(self) -> bytes:
        return bytes(self._data)

    @classmethod
    def inflate(
        cls, object_content: bytes, children: Mapping[str, object] | None = None
    ) -> ArrayPayload:
        if children:
            raise ValueError("an ArrayPayload has no children")
        return cls(object_content)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArrayPayload):
            return NotImplemented
        return memoryview(self._data).cast("B") == memoryview(other._data).cast("B")

    __hash__ = None  # type: ignore[assignment]  # equality is by value

    def __repr__(self) -> str:
        return f"ArrayPayload(nbytes={memoryview(self._data).nbytes})"


def payload_buffers(
    children: Mapping[str, object] | None, needed: Iterable[str]
) -> dict[str, Buffer]:
    """The payload bytes an inflate needs, by id. `ValueError` unless ``children`` holds
    exactly the payloads ``needed`` names (Flower's rule: no child missing, none extra)."""
    wanted = set(needed)
    given = dict(children or {})
    if set(given) != wanted:
        raise ValueError(f"unexpected children: expected {sorted(wanted)}, got {sorted(given)}")
    out: dict[str, Buffer] = {}
    for object_id, child in given.items():
        if not isinstance(child, ArrayPayload):
            raise ValueError(f"child {object_id} is a {type(child).__name__}, not ArrayPayload")
        out[object_id] = child.data
    return out
