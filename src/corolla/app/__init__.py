"""The app-facing data model: records, messages and contexts, and the value types they hold."""

from corolla.common.typing import (
    ConfigRecordValues,
    ConfigScalar,
    ConfigScalarList,
    MetricRecordValues,
    MetricScalar,
    MetricScalarList,
    UserConfig,
    UserConfigValue,
)
from corolla.records import (
    DEFAULT_TTL,
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
    "DEFAULT_TTL",
    "Array",
    "ArrayRecord",
    "ConfigRecord",
    "ConfigRecordValues",
    "ConfigScalar",
    "ConfigScalarList",
    "Context",
    "Error",
    "ErrorCode",
    "Message",
    "MessageType",
    "Metadata",
    "MetricRecord",
    "MetricRecordValues",
    "MetricScalar",
    "MetricScalarList",
    "RecordDict",
    "UserConfig",
    "UserConfigValue",
]
