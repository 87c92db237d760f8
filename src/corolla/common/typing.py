"""Type aliases and the legacy instruction/result dataclasses of Flower's ``flwr.common.typing``.

Apps written for Flower annotate with these names (``NDArrays``, ``Scalar``, ``UserConfig``,
``Parameters``, ...). The dataclasses are the pre-Message-API vocabulary (``FitIns``/``FitRes``
and friends); Corolla keeps them so that helper code written against them still imports and
runs, with Flower's field names and order. They are mutable, as in Flower.

The value aliases match what `corolla.records.MetricRecord` and `ConfigRecord` accept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

NDArray: TypeAlias = npt.NDArray[Any]
NDArrayInt: TypeAlias = npt.NDArray[np.int_]
NDArrayFloat: TypeAlias = npt.NDArray[np.float64]
NDArrays: TypeAlias = list[NDArray]

# The Python types of protobuf's scalar value types.
Scalar: TypeAlias = bool | bytes | float | int | str
Value: TypeAlias = (
    bool
    | bytes
    | float
    | int
    | str
    | list[bool]
    | list[bytes]
    | list[float]
    | list[int]
    | list[str]
)

# What a MetricRecord holds: a number, or a list of numbers of one type.
MetricScalar: TypeAlias = int | float
MetricScalarList: TypeAlias = list[int] | list[float]
MetricRecordValues: TypeAlias = MetricScalar | MetricScalarList
# What a ConfigRecord holds: a scalar below, or a list of one of them.
ConfigScalar: TypeAlias = MetricScalar | str | bytes | bool
ConfigScalarList: TypeAlias = MetricScalarList | list[str] | list[bytes] | list[bool]
ConfigRecordValues: TypeAlias = ConfigScalar | ConfigScalarList

Metrics: TypeAlias = dict[str, Scalar]
MetricsAggregationFn: TypeAlias = Callable[[list[tuple[int, Metrics]]], Metrics]
Config: TypeAlias = dict[str, Scalar]
Properties: TypeAlias = dict[str, Scalar]

# A run or node config (``[tool.flwr.app.config]``, ``--run-config``): flat, four value types.
UserConfigValue: TypeAlias = bool | float | int | str
UserConfig: TypeAlias = dict[str, UserConfigValue]


class MessageTypeLegacy:
    """Message types of the legacy client API (namespace of strings; not instantiable)."""

    GET_PROPERTIES = "get_properties"
    GET_PARAMETERS = "get_parameters"

    def __new__(cls) -> MessageTypeLegacy:
        raise TypeError(f"{cls.__name__} is a namespace of constants, not a class to instantiate")


class Code(Enum):
    """Outcome of a legacy client call."""

    OK = 0
    GET_PROPERTIES_NOT_IMPLEMENTED = 1
    GET_PARAMETERS_NOT_IMPLEMENTED = 2
    FIT_NOT_IMPLEMENTED = 3
    EVALUATE_NOT_IMPLEMENTED = 4


@dataclass
class Status:
    code: Code
    message: str


@dataclass
class Parameters:
    """Model parameters as serialized tensors (``tensor_type`` names the format)."""

    tensors: list[bytes]
    tensor_type: str


@dataclass
class GetParametersIns:
    config: Config


@dataclass
class GetParametersRes:
    status: Status
    parameters: Parameters


@dataclass
class FitIns:
    parameters: Parameters
    config: dict[str, Scalar]


@dataclass
class FitRes:
    status: Status
    parameters: Parameters
    num_examples: int
    metrics: dict[str, Scalar]


@dataclass
class EvaluateIns:
    parameters: Parameters
    config: dict[str, Scalar]


@dataclass
class EvaluateRes:
    status: Status
    loss: float
    num_examples: int
    metrics: dict[str, Scalar]


@dataclass
class GetPropertiesIns:
    config: Config


@dataclass
class GetPropertiesRes:
    status: Status
    properties: Properties


@dataclass
class ReconnectIns:
    """Ask a client to reconnect after ``seconds`` (None: do not reconnect)."""

    seconds: int | None


@dataclass
class DisconnectRes:
    reason: str


@dataclass
class ServerMessage:
    """One legacy instruction: at most one field is set."""

    get_properties_ins: GetPropertiesIns | None = None
    get_parameters_ins: GetParametersIns | None = None
    fit_ins: FitIns | None = None
    evaluate_ins: EvaluateIns | None = None


@dataclass
class ClientMessage:
    """One legacy result: at most one field is set."""

    get_properties_res: GetPropertiesRes | None = None
    get_parameters_res: GetParametersRes | None = None
    fit_res: FitRes | None = None
    evaluate_res: EvaluateRes | None = None
