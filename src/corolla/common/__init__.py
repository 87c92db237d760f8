"""Shared building blocks, and the names apps import from Flower's ``flwr.common``.

Two audiences. Daemons import the submodules (``corolla.common.errors``, ``.grpc``, ...),
which import nothing of Corolla above ``common``. App code ported from Flower imports
``from corolla.common import Context, log, ndarrays_to_parameters``: those names resolve on
first use (a module ``__getattr__``, PEP 562), so importing a submodule never loads the records
(nor NumPy), and `corolla.records`, which imports ``corolla.common.*``, is caught in no
import cycle. This module is the only one in ``common`` allowed to import `corolla.records`
(the import-linter contract in pyproject.toml says so).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corolla.common.date import now as now
    from corolla.common.logger import configure as configure
    from corolla.common.logger import log as log
    from corolla.common.parameter import bytes_to_ndarray as bytes_to_ndarray
    from corolla.common.parameter import ndarray_to_bytes as ndarray_to_bytes
    from corolla.common.parameter import ndarrays_to_parameters as ndarrays_to_parameters
    from corolla.common.parameter import parameters_to_ndarrays as parameters_to_ndarrays
    from corolla.common.telemetry import EventType as EventType
    from corolla.common.telemetry import event as event
    from corolla.common.typing import (
        ClientMessage,
        Code,
        Config,
        ConfigRecordValues,
        DisconnectRes,
        EvaluateIns,
        EvaluateRes,
        FitIns,
        FitRes,
        GetParametersIns,
        GetParametersRes,
        GetPropertiesIns,
        GetPropertiesRes,
        MessageTypeLegacy,
        MetricRecordValues,
        Metrics,
        MetricsAggregationFn,
        NDArray,
        NDArrayFloat,
        NDArrayInt,
        NDArrays,
        Parameters,
        Properties,
        ReconnectIns,
        Scalar,
        ServerMessage,
        Status,
        Value,
    )
    from corolla.records import (
        DEFAULT_TTL,
        Array,
        ArrayRecord,
        ConfigRecord,
        Context,
        Error,
        Message,
        MessageType,
        Metadata,
        MetricRecord,
        RecordDict,
    )

    # Flower's former names of the record classes.
    RecordSet = RecordDict
    ParametersRecord = ArrayRecord
    MetricsRecord = MetricRecord
    ConfigsRecord = ConfigRecord

# Flower's gRPC message size limit (2 GiB - 1), for code that passes it to its own channels.
# Corolla's channels use `corolla.common.grpc.MAX_MESSAGE_BYTES` and stream large arrays.
GRPC_MAX_MESSAGE_LENGTH: int = 2_147_483_647

# name -> the module that defines it, imported on first access
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        (
            "DEFAULT_TTL",
            "Array",
            "ArrayRecord",
            "ConfigRecord",
            "Context",
            "Error",
            "Message",
            "MessageType",
            "Metadata",
            "MetricRecord",
            "RecordDict",
        ),
        "corolla.records",
    ),
    **dict.fromkeys(
        (
            "ClientMessage",
            "Code",
            "Config",
            "ConfigRecordValues",
            "DisconnectRes",
            "EvaluateIns",
            "EvaluateRes",
            "FitIns",
            "FitRes",
            "GetParametersIns",
            "GetParametersRes",
            "GetPropertiesIns",
            "GetPropertiesRes",
            "MessageTypeLegacy",
            "MetricRecordValues",
            "Metrics",
            "MetricsAggregationFn",
            "NDArray",
            "NDArrayFloat",
            "NDArrayInt",
            "NDArrays",
            "Parameters",
            "Properties",
            "ReconnectIns",
            "Scalar",
            "ServerMessage",
            "Status",
            "Value",
        ),
        "corolla.common.typing",
    ),
    **dict.fromkeys(
        (
            "bytes_to_ndarray",
            "ndarray_to_bytes",
            "ndarrays_to_parameters",
            "parameters_to_ndarrays",
        ),
        "corolla.common.parameter",
    ),
    **dict.fromkeys(("configure", "log"), "corolla.common.logger"),
    **dict.fromkeys(("EventType", "event"), "corolla.common.telemetry"),
    "now": "corolla.common.date",
}
# Flower's former names of the record classes -> the current class (the same object here).
_RENAMED = {
    "RecordSet": "RecordDict",
    "ParametersRecord": "ArrayRecord",
    "MetricsRecord": "MetricRecord",
    "ConfigsRecord": "ConfigRecord",
}

__all__ = [
    "DEFAULT_TTL",
    "GRPC_MAX_MESSAGE_LENGTH",
    "Array",
    "ArrayRecord",
    "ClientMessage",
    "Code",
    "Config",
    "ConfigRecord",
    "ConfigRecordValues",
    "ConfigsRecord",
    "Context",
    "DisconnectRes",
    "Error",
    "EvaluateIns",
    "EvaluateRes",
    "EventType",
    "FitIns",
    "FitRes",
    "GetParametersIns",
    "GetParametersRes",
    "GetPropertiesIns",
    "GetPropertiesRes",
    "Message",
    "MessageType",
    "MessageTypeLegacy",
    "Metadata",
    "MetricRecord",
    "MetricRecordValues",
    "Metrics",
    "MetricsAggregationFn",
    "MetricsRecord",
    "NDArray",
    "NDArrayFloat",
    "NDArrayInt",
    "NDArrays",
    "Parameters",
    "ParametersRecord",
    "Properties",
    "ReconnectIns",
    "RecordDict",
    "RecordSet",
    "Scalar",
    "ServerMessage",
    "Status",
    "Value",
    "array_from_numpy",
    "bytes_to_ndarray",
    "configure",
    "event",
    "log",
    "ndarray_to_bytes",
    "ndarrays_to_parameters",
    "now",
    "parameters_to_ndarrays",
]

_warned: set[str] = set()


def _deprecated(old: str, advice: str) -> None:
    """Log once per process that Flower's deprecated ``old`` is in use."""
    if old in _warned:
        return
    _warned.add(old)
    from corolla.common.logger import LOGGER

    LOGGER.warning("%s is deprecated (as in Flower): %s", old, advice)


def array_from_numpy(ndarray: NDArray) -> Array:
    """A new `Array` holding a copy of ``ndarray``. Deprecated, as in Flower."""
    from corolla.records import Array

    _deprecated("array_from_numpy", "use Array.from_numpy_ndarray(ndarray)")
    return Array.from_numpy_ndarray(ndarray)


if not TYPE_CHECKING:  # mypy reads the imports above; a typo must stay an error for it

    def __getattr__(name: str) -> Any:
        if name in _RENAMED:
            _deprecated(name, f"it is the same class as {_RENAMED[name]}; use that name")
            value = __getattr__(_RENAMED[name])
        elif name in _LAZY:
            value = getattr(importlib.import_module(_LAZY[name]), name)
        else:
            # AttributeError lets ``from corolla.common import errors`` import the submodule.
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value  # later lookups skip this function
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
