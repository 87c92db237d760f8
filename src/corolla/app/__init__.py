"""The app-facing data model: records, messages and contexts."""

from corolla.records import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    ErrorCode,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)

__all__ = [
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
]
