"""The SuperNode's own records: what it relays and keeps, with payloads as opaque bytes.

The node never decodes a message or a context: it reads the routing fields it needs and the
object ids a payload references, and passes the encoded bytes on. Protobuf conversion happens
at the boundaries only (`connection.py`, `clientappio.py`, through `convert.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from corolla.records.context import UserConfig


@dataclass(frozen=True)
class Envelope:
    """A message in transit through the node: routing fields plus the encoded message."""

    message_id: str
    run_id: int
    src_node_id: int
    dst_node_id: int
    reply_to_message_id: str  # "" for instructions (ServerApp -> node)
    group_id: str
    message_type: str
    created_at: float
    ttl: float
    payload: bytes  # serialized corolla.proto.v1.Message
    object_ids: tuple[str, ...] = ()  # large-array objects the payload references


@dataclass(frozen=True)
class RunInfo:
    """A run as the node learns it from the SuperLink (``GetRun``)."""

    run_id: int
    fab_id: str  # "publisher/name"
    fab_version: str
    fab_hash: str
    override_config: UserConfig
    run_config: UserConfig  # defaults from the FAB merged with the overrides
    federation: str = ""
    owner: str = ""


@dataclass(frozen=True)
class Fab:
    """A FAB: its sha256 hex and the zip archive."""

    hash: str
    content: bytes


@dataclass(frozen=True)
class AppContext:
    """A run's context on this node, encoded (the ClientApp's state between messages)."""

    run_id: int
    payload: bytes  # serialized corolla.proto.v1.Context
    object_ids: tuple[str, ...] = ()  # large-array objects its state references
