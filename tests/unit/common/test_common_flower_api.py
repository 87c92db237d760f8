"""`corolla.common` and `corolla.app` offer the names of Flower's ``flwr.common`` / ``flwr.app``.

The name lists are Flower 1.42's (../shared/reference/flower-api-diff.md); field names, enum
members and constants are read from Flower's source. The lazy façade is checked in fresh
interpreters, since one test process has long imported everything.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import io
import logging
import pickle
import socket
import subprocess
import sys
import threading
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import corolla.app
import corolla.common
import corolla.records
from corolla.common import typing as ctyping
from corolla.common.config import flatten_dict, unflatten_dict
from corolla.common.errors import InvalidArgument
from corolla.common.logger import LOGGER, configure
from corolla.common.parameter import (
    bytes_to_ndarray,
    ndarray_to_bytes,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from corolla.common.telemetry import EventType, event

FLOWER_COMMON = [
    "Array", "ArrayRecord", "ClientMessage", "Code", "Config", "ConfigRecord",
    "ConfigRecordValues", "ConfigsRecord", "Context", "DEFAULT_TTL", "DisconnectRes", "Error",
    "EvaluateIns", "EvaluateRes", "EventType", "FitIns", "FitRes", "GRPC_MAX_MESSAGE_LENGTH",
    "GetParametersIns", "GetParametersRes", "GetPropertiesIns", "GetPropertiesRes", "Message",
    "MessageType", "MessageTypeLegacy", "Metadata", "MetricRecord", "MetricRecordValues",
    "Metrics", "MetricsAggregationFn", "MetricsRecord", "NDArray", "NDArrayFloat", "NDArrayInt",
    "NDArrays", "Parameters", "ParametersRecord", "Properties", "ReconnectIns", "RecordDict",
    "RecordSet", "Scalar", "ServerMessage", "Status", "Value", "array_from_numpy",
    "bytes_to_ndarray", "configure", "event", "log", "ndarray_to_bytes",
    "ndarrays_to_parameters", "now", "parameters_to_ndarrays",
]  # fmt: skip
FLOWER_TYPING = [
    "ClientMessage", "Code", "Config", "DisconnectRes", "EvaluateIns", "EvaluateRes", "FitIns",
    "FitRes", "GetParametersIns", "GetParametersRes", "GetPropertiesIns", "GetPropertiesRes",
    "Metrics", "MetricsAggregationFn", "NDArray", "NDArrayFloat", "NDArrayInt", "NDArrays",
    "Parameters", "Properties", "ReconnectIns", "Scalar", "ServerMessage", "Status", "Value",
    # app-level value aliases, also defined in flwr.common.typing
    "UserConfig", "UserConfigValue", "ConfigScalar", "ConfigScalarList", "ConfigRecordValues",
    "MetricScalar", "MetricScalarList", "MetricRecordValues",
]  # fmt: skip
FLOWER_APP = [
    "Array", "ArrayRecord", "ConfigRecord", "ConfigRecordValues", "ConfigScalar",
    "ConfigScalarList", "Context", "DEFAULT_TTL", "Error", "Message", "MessageType", "Metadata",
    "MetricRecord", "MetricRecordValues", "MetricScalar", "MetricScalarList", "RecordDict",
    "UserConfig", "UserConfigValue",
]  # fmt: skip
RENAMED = {
    "RecordSet": "RecordDict",
    "ParametersRecord": "ArrayRecord",
    "MetricsRecord": "MetricRecord",
    "ConfigsRecord": "ConfigRecord",
}


# -- names ----------------------------------------------------------------------------------------


def test_common_exports_exactly_flowers_names() -> None:
    assert sorted(corolla.common.__all__) == sorted(FLOWER_COMMON)
    listed = dir(corolla.common)
    for name in FLOWER_COMMON:
        assert name in listed
        assert getattr(corolla.common, name) is not None


@pytest.mark.parametrize("name", FLOWER_COMMON)
def test_from_common_import_each_name(name: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from corolla.common import {name}", namespace)
    assert namespace[name] is getattr(corolla.common, name)


def test_unknown_name_is_an_attribute_error_and_submodules_still_import() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Contxt'"):
        _ = corolla.common.Contxt  # type: ignore[attr-defined]  # the typo is the point
    from corolla.common import errors

    assert errors.CorollaError.__module__ == "corolla.common.errors"


def test_message_api_names_are_the_records_classes() -> None:
    for name in ("Array", "ArrayRecord", "ConfigRecord", "Context", "Error", "Message"):
        assert getattr(corolla.common, name) is getattr(corolla.records, name)
    for name in ("MessageType", "Metadata", "MetricRecord", "RecordDict", "DEFAULT_TTL"):
        assert getattr(corolla.common, name) is getattr(corolla.records, name)


def test_flowers_former_record_names_are_the_current_classes() -> None:
    for old, new in RENAMED.items():
        assert getattr(corolla.common, old) is getattr(corolla.records, new)


def test_a_former_name_logs_one_deprecation(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="corolla")
    corolla.common.__dict__.pop("RecordSet", None)  # forget the cached lookup
    corolla.common._warned.discard("RecordSet")
    for _ in range(3):
        assert corolla.common.RecordSet is corolla.records.RecordDict
    warnings = [r for r in caplog.records if "RecordSet" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING and warnings[0].name == "corolla"


def test_typing_names() -> None:
    for name in FLOWER_TYPING:
        assert getattr(ctyping, name) is not None
    for name in set(FLOWER_TYPING) & set(FLOWER_COMMON):
        assert getattr(corolla.common, name) is getattr(ctyping, name)


def test_app_offers_flowers_names_and_keeps_error_code() -> None:
    assert sorted(corolla.app.__all__) == sorted([*FLOWER_APP, "ErrorCode"])
    for name in FLOWER_APP:
        assert getattr(corolla.app, name) is not None
    assert corolla.app.DEFAULT_TTL is corolla.records.DEFAULT_TTL
    assert corolla.app.UserConfig is ctyping.UserConfig


def test_grpc_max_message_length_is_flowers() -> None:
    assert corolla.common.GRPC_MAX_MESSAGE_LENGTH == 2**31 - 1  # 2_147_483_647 in Flower


# -- typing ---------------------------------------------------------------------------------------

FIELDS = {  # Flower's field names, in order
    "Status": ("code", "message"),
    "Parameters": ("tensors", "tensor_type"),
    "GetParametersIns": ("config",),
    "GetParametersRes": ("status", "parameters"),
    "FitIns": ("parameters", "config"),
    "FitRes": ("status", "parameters", "num_examples", "metrics"),
    "EvaluateIns": ("parameters", "config"),
    "EvaluateRes": ("status", "loss", "num_examples", "metrics"),
    "GetPropertiesIns": ("config",),
    "GetPropertiesRes": ("status", "properties"),
    "ReconnectIns": ("seconds",),
    "DisconnectRes": ("reason",),
    "ServerMessage": ("get_properties_ins", "get_parameters_ins", "fit_ins", "evaluate_ins"),
    "ClientMessage": ("get_properties_res", "get_parameters_res", "fit_res", "evaluate_res"),
}


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_legacy_dataclasses_have_flowers_fields(name: str) -> None:
    cls = getattr(ctyping, name)
    assert tuple(f.name for f in dataclasses.fields(cls)) == FIELDS[name]
    typing.get_type_hints(cls)  # every annotation resolves


def test_legacy_containers_default_to_empty() -> None:
    assert ctyping.ServerMessage() == ctyping.ServerMessage(None, None, None, None)
    status = ctyping.Status(code=ctyping.Code.OK, message="")
    res = ctyping.FitRes(status, ctyping.Parameters([], "numpy.ndarray"), 3, {"acc": 0.5})
    assert ctyping.ClientMessage(fit_res=res).fit_res is res


def test_code_and_legacy_message_types_are_flowers() -> None:
    assert {c.name: c.value for c in ctyping.Code} == {
        "OK": 0,
        "GET_PROPERTIES_NOT_IMPLEMENTED": 1,
        "GET_PARAMETERS_NOT_IMPLEMENTED": 2,
        "FIT_NOT_IMPLEMENTED": 3,
        "EVALUATE_NOT_IMPLEMENTED": 4,
    }
    assert ctyping.MessageTypeLegacy.GET_PROPERTIES == "get_properties"
    assert ctyping.MessageTypeLegacy.GET_PARAMETERS == "get_parameters"
    with pytest.raises(TypeError):
        ctyping.MessageTypeLegacy()


SAMPLES: dict[type, Any] = {int: 3, float: 0.5, str: "s", bytes: b"b", bool: True}


def test_config_value_aliases_are_what_config_record_accepts() -> None:
    scalars = set(typing.get_args(ctyping.ConfigScalar))
    assert scalars == {int, float, str, bytes, bool}
    for kind in scalars:
        record = corolla.records.ConfigRecord({"v": SAMPLES[kind], "l": [SAMPLES[kind]] * 2})
        assert record["v"] == SAMPLES[kind]
    lists = {typing.get_args(alias)[0] for alias in typing.get_args(ctyping.ConfigScalarList)}
    assert lists == scalars
    assert set(typing.get_args(ctyping.ConfigRecordValues)) == set(
        typing.get_args(ctyping.ConfigScalar)
    ) | set(typing.get_args(ctyping.ConfigScalarList))


def test_metric_value_aliases_are_what_metric_record_accepts() -> None:
    scalars = set(typing.get_args(ctyping.MetricScalar))
    assert scalars == {int, float}
    for kind in scalars:
        corolla.records.MetricRecord({"v": SAMPLES[kind], "l": [SAMPLES[kind]] * 2})
    for refused in (str, bytes):
        with pytest.raises(TypeError):
            corolla.records.MetricRecord({"v": SAMPLES[refused]})


def test_user_config_values() -> None:
    assert set(typing.get_args(ctyping.UserConfigValue)) == {bool, float, int, str}
    assert typing.get_args(ctyping.UserConfig) == (str, ctyping.UserConfigValue)


# -- log, configure, now ----------------------------------------------------------------------


def test_log_goes_to_the_corolla_logger(caplog: pytest.LogCaptureFixture) -> None:
    from corolla.common import log
    from corolla.common.logger import log as log_from_module

    assert log is log_from_module
    caplog.set_level(logging.INFO, logger="corolla")
    log(logging.INFO, "round %d of %s", 2, "fedavg")
    [record] = [r for r in caplog.records if r.name == "corolla"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == "round 2 of fedavg"
    assert record.filename == Path(__file__).name  # the caller's line, not a wrapper's


@pytest.fixture
def restore_handlers() -> typing.Iterator[None]:
    """Remove and close the handlers a test's `configure` calls add."""
    before = list(LOGGER.handlers)
    yield
    for handler in LOGGER.handlers:
        if handler not in before:
            LOGGER.removeHandler(handler)
            handler.close()


def test_configure_writes_a_log_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, restore_handlers: None
) -> None:
    file = tmp_path / "run.log"
    caplog.set_level(logging.DEBUG, logger="corolla")
    configure("exp-7", filename=str(file))
    configure("exp-7", filename=str(file))  # the same file twice: still one handler
    corolla.common.log(logging.DEBUG, "lr=%s", 0.01)
    logging.getLogger("corolla.serverapp").warning("from a child logger")
    for handler in LOGGER.handlers:
        handler.flush()
    lines = file.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("exp-7 | ") and "DEBUG" in lines[0] and lines[0].endswith("lr=0.01")
    assert "corolla.serverapp" in lines[1] and lines[1].endswith("from a child logger")


def test_configure_refuses_a_log_host(restore_handlers: None) -> None:
    before = list(LOGGER.handlers)
    with pytest.raises(InvalidArgument, match="remote host"):
        configure("exp", host="logs.example.com:80")
    assert LOGGER.handlers == before


def test_now_is_aware_utc() -> None:
    before = datetime.datetime.now(tz=datetime.UTC)
    value = corolla.common.now()
    after = datetime.datetime.now(tz=datetime.UTC)
    assert value.utcoffset() == datetime.timedelta(0)
    assert before <= value <= after


# -- flatten / unflatten ------------------------------------------------------------------------


def test_flatten_and_unflatten_a_nested_config() -> None:
    nested = {
        "seed": 7,
        "train": {"lr": 0.1, "epochs": 2, "opt": {"name": "sgd", "nesterov": True}},
    }
    flat = {
        "seed": 7,
        "train.lr": 0.1,
        "train.epochs": 2,
        "train.opt.name": "sgd",
        "train.opt.nesterov": True,
    }
    assert flatten_dict(nested) == flat
    assert unflatten_dict(flat) == nested
    assert flatten_dict({"lr": 0.1}, parent_key="train") == {"train.lr": 0.1}
    assert flatten_dict(None) == {}


def test_flatten_refuses_values_a_user_config_cannot_hold() -> None:
    for bad in ([1, 2], None, b"raw", 1j):
        with pytest.raises(ValueError, match=r"'a\.b'"):
            flatten_dict({"a": {"b": bad}})


def test_unflatten_refuses_a_key_that_is_value_and_table() -> None:
    with pytest.raises(ValueError, match="'a'"):
        unflatten_dict({"a": 1, "a.b": 2})
    with pytest.raises(ValueError, match="'a'"):
        unflatten_dict({"a.b": 2, "a": 1})


KEYS = st.text(st.characters(exclude_characters=".", codec="utf-8"), min_size=1, max_size=6)
LEAVES = st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6))
CONFIGS = st.dictionaries(
    KEYS,
    st.recursive(
        LEAVES,
        lambda inner: st.dictionaries(KEYS, inner, min_size=1, max_size=3),
        max_leaves=8,
    ),
    max_size=4,
)


def _leaves(tree: dict[str, Any]) -> int:
    return sum(_leaves(v) if isinstance(v, dict) else 1 for v in tree.values())


@given(CONFIGS)
def test_flatten_unflatten_round_trip(nested: dict[str, Any]) -> None:
    flat = flatten_dict(nested)
    assert len(flat) == _leaves(nested)
    assert not any(isinstance(v, dict) for v in flat.values())
    assert unflatten_dict(flat) == nested
    assert flatten_dict(unflatten_dict(flat)) == flat


# -- ndarray bytes and Parameters ---------------------------------------------------------------

ARRAYS = [
    np.array(3.5, dtype=np.float32),  # 0-d
    np.array(-7, dtype=np.int64),  # 0-d
    np.arange(6, dtype=np.float64).reshape(2, 3),
    np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
    np.array([1, 2, 3], dtype=">i4"),  # big-endian
    np.array([True, False]),
    np.array([1 + 2j], dtype=np.complex64),
    np.array([0.5, np.nan, np.inf], dtype=np.float16),
    np.array([0, 255], dtype=np.uint8),
    np.zeros((0, 3), dtype=np.float32),
    np.array(["ab", "c"]),  # fixed-width unicode: no pickle needed
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype.str}{a.shape}")
def test_ndarray_bytes_round_trip(array: np.ndarray[Any, Any]) -> None:
    data = ndarray_to_bytes(array)
    assert data[:6] == b"\x93NUMPY"  # the .npy magic string of NumPy's published format
    back = bytes_to_ndarray(data)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()
    assert back.flags.writeable


@given(hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, min_side=0)))
def test_ndarray_bytes_round_trip_property(array: np.ndarray[Any, Any]) -> None:
    back = bytes_to_ndarray(ndarray_to_bytes(array))
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()


def test_object_arrays_are_refused() -> None:
    with pytest.raises(ValueError):
        ndarray_to_bytes(np.array([{"a": 1}, None], dtype=object))


CALLS: list[str] = []


def _record_call() -> None:
    CALLS.append("unpickled")


class _Payload:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _record_call, ()


def test_pickled_payloads_are_refused_without_running_them() -> None:
    raw_pickle = pickle.dumps(_Payload())
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Payload()], dtype=object), allow_pickle=True)
    npy_with_objects = buffer.getvalue()
    pickle.loads(raw_pickle)  # control: this payload does run when unpickled
    assert CALLS == ["unpickled"]
    CALLS.clear()
    for payload in (raw_pickle, npy_with_objects):
        with pytest.raises(ValueError):
            bytes_to_ndarray(payload)
    assert CALLS == []


def test_an_npz_archive_is_not_one_array() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, a=np.ones(2))
    with pytest.raises(ValueError, match=r"one \.npy array"):
        bytes_to_ndarray(buffer.getvalue())


def test_parameters_round_trip() -> None:
    arrays: list[np.ndarray[Any, Any]] = [
        np.ones((2, 2), dtype=np.float32),
        np.array(4, dtype=np.int8),
    ]
    parameters = ndarrays_to_parameters(arrays)
    assert isinstance(parameters, ctyping.Parameters)
    assert parameters.tensor_type == "numpy.ndarray"
    assert parameters.tensors == [ndarray_to_bytes(a) for a in arrays]
    back = parameters_to_ndarrays(parameters)
    assert len(back) == 2
    for got, want in zip(back, arrays, strict=True):
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_array_from_numpy_copies() -> None:
    source = np.array([[1.0, 2.0]], dtype=np.float32)
    array = corolla.common.array_from_numpy(source)
    assert isinstance(array, corolla.records.Array)
    source[0, 0] = 9.0
    assert array.numpy().tolist() == [[1.0, 2.0]]


# -- telemetry -----------------------------------------------------------------------------------

FLOWER_EVENTS = [
    "PING", "START_CLIENT_ENTER", "START_CLIENT_LEAVE", "START_SERVER_ENTER",
    "START_SERVER_LEAVE", "START_SIMULATION_ENTER", "START_SIMULATION_LEAVE",
    "FLWR_SIMULATION_RUN_ENTER", "FLWR_SIMULATION_RUN_LEAVE", "FLWR_SERVERAPP_RUN_ENTER",
    "FLWR_SERVERAPP_RUN_LEAVE", "CLI_FLOWER_SIMULATION_ENTER", "CLI_FLOWER_SIMULATION_LEAVE",
    "PYTHON_API_RUN_SIMULATION_ENTER", "PYTHON_API_RUN_SIMULATION_LEAVE", "RUN_SUPERLINK_ENTER",
    "RUN_SUPERLINK_LEAVE", "RUN_SUPERNODE_ENTER", "RUN_SUPERNODE_LEAVE", "RUN_SUPEREXEC_ENTER",
    "RUN_SUPEREXEC_LEAVE",
]  # fmt: skip


def test_event_types_are_flowers_names() -> None:
    assert [e.name for e in EventType] == FLOWER_EVENTS
    assert all(e.value == e.name for e in EventType)


def test_event_records_and_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("event() opened a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    threads = threading.active_count()
    future = event(EventType.RUN_SUPERLINK_ENTER, {"k": "v"})
    assert future.done() and future.result(timeout=0) == "disabled"
    assert threading.active_count() == threads


# -- the lazy façade, in fresh interpreters ------------------------------------------------------


def _fresh(code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_daemon_imports_do_not_load_the_records() -> None:
    _fresh(
        "import corolla.common.errors, corolla.common.config, sys\n"
        "assert 'corolla.records' not in sys.modules, 'records loaded'\n"
        "assert 'numpy' not in sys.modules, 'numpy loaded'"
    )


def test_flower_style_imports_from_common() -> None:
    _fresh(
        "from corolla.common import Context, log, ndarrays_to_parameters\n"
        "import sys\n"
        "assert Context is sys.modules['corolla.records'].Context\n"
        "assert ndarrays_to_parameters([]).tensors == []"
    )


def test_records_first_then_common() -> None:
    _fresh(
        "import corolla.records\n"
        "from corolla.common import Message\n"
        "assert Message is corolla.records.Message"
    )


def test_each_submodule_imports_on_its_own() -> None:
    for name in ("typing", "logger", "parameter", "telemetry", "date", "config"):
        importlib.import_module(f"corolla.common.{name}")
        _fresh(f"import corolla.common.{name}")
