"""The public user API is pinned: a change of exported names must be deliberate."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PUBLIC = {
    "corolla.app": [
        "Array",
        "ArrayRecord",
        "ConfigRecord",
        "ConfigRecordValues",
        "ConfigScalar",
        "ConfigScalarList",
        "Context",
        "DEFAULT_TTL",
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
    ],
    "corolla.clientapp": [
        "ClientApp",
        "mod",
    ],
    "corolla.clientapp.mod": [
        "LocalDpMod",
        "adaptiveclipping_mod",
        "arrays_size_mod",
        "fixedclipping_mod",
        "message_size_mod",
    ],
    "corolla.common": [
        "Array",
        "ArrayRecord",
        "ClientMessage",
        "Code",
        "Config",
        "ConfigRecord",
        "ConfigRecordValues",
        "ConfigsRecord",
        "Context",
        "DEFAULT_TTL",
        "DisconnectRes",
        "Error",
        "EvaluateIns",
        "EvaluateRes",
        "EventType",
        "FitIns",
        "FitRes",
        "GRPC_MAX_MESSAGE_LENGTH",
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
    ],
    "corolla.serverapp": [
        "GaussianPrivacyEvent",
        "Grid",
        "NeighboringRelation",
        "PrivacyAccountant",
        "PrivacyConfig",
        "PrivacySpent",
        "RdpAccountant",
        "SamplingMethod",
        "ServerApp",
        "strategy",
    ],
    "corolla.simulation": [
        "ClientAppSource",
        "InProcessGrid",
        "SimulationGrid",
        "run_simulation",
    ],
    "corolla.serverapp.strategy": [
        "Bulyan",
        "DifferentialPrivacyClientSideAdaptiveClipping",
        "DifferentialPrivacyClientSideFixedClipping",
        "DifferentialPrivacyServerSideAdaptiveClipping",
        "DifferentialPrivacyServerSideFixedClipping",
        "FedAdagrad",
        "FedAdam",
        "FedAvg",
        "FedAvgM",
        "FedMedian",
        "FedProx",
        "FedTrimmedAvg",
        "FedXgbBagging",
        "FedXgbCyclic",
        "FedYogi",
        "Krum",
        "MultiKrum",
        "QFedAvg",
        "Result",
        "Strategy",
        "WeightedArrayMean",
        "aggregate_metricrecords",
    ],
    "corolla.common.errors": [
        "AlreadyExists",
        "AppError",
        "CorollaError",
        "DeadlineExceeded",
        "FailedPrecondition",
        "InvalidArgument",
        "NotFound",
        "PermissionDenied",
        "ResourceExhausted",
        "Unauthenticated",
        "Unavailable",
    ],
}

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_exported_names_are_pinned(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == sorted(PUBLIC[module_name])
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_errors_share_one_root() -> None:
    from corolla.common import errors

    for name in PUBLIC["corolla.common.errors"]:
        assert issubclass(getattr(errors, name), errors.CorollaError)


def test_py_typed_is_shipped() -> None:
    assert (ROOT / "src" / "corolla" / "py.typed").exists()


@pytest.mark.timeout(120)
def test_user_app_code_type_checks_strictly() -> None:
    """The Message-API app used in the in-process FedAvg test passes ``mypy --strict``."""
    app = ROOT / "tests" / "unit" / "serverapp" / "test_inprocess_fedavg.py"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(app)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(120)
def test_proto_stubs_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_proto.py", "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "module", ["corolla.cli.main", "corolla.superlink.main", "corolla.supernode.main"]
)
def test_entry_point_modules_import(module: str) -> None:
    assert callable(importlib.import_module(module).main)
