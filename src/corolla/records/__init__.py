"""Records, messages and contexts: the data model shared by every part of Corolla."""

from corolla.records.array import Array
from corolla.records.arrayrecord import ArrayRecord
from corolla.records.context import Context, UserConfig
from corolla.records.message import (
    DEFAULT_TTL,
    Error,
    ErrorCode,
    Message,
    MessageType,
    Metadata,
)
from corolla.records.recorddict import RecordDict
from corolla.records.typed import ConfigRecord, MetricRecord

__all__ = [
    "DEFAULT_TTL",
    "Array",
    "ArrayRecord",
    "ConfigRecord",
    "Context",
    "Error",
    "ErrorCode",
    "Message",
    "MessageType",
    "Metadata",
    "MetricRecord",
    "RecordDict",
    "UserConfig",
]
