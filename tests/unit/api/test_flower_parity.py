"""Flower parity (issue 11): every public Message-API name of Flower 1.42, and its signature.

A Flower app must run after replacing the import root ``flwr`` with ``corolla``. The names
come from the team's reference list of Flower 1.42's public API (measured with
``inspect``); the signatures from its ``flwr init:`` and member lines and, for the classes it
only names (strategies, mods, privacy accountants), from Flower's source. Facts only: the
tables below are written by hand and nothing here imports Flower.

Rules checked:
- every name in ``FLOWER_NAMES`` imports from its Corolla module (and is in ``__all__`` where
  Flower's module has one); every name in ``NOT_PROVIDED`` does not (providing one later
  means moving it to ``FLOWER_NAMES``);
- every entry of ``SIGNATURES`` has Flower's member kind (method, classmethod, read-only or
  settable property) and Flower's parameters: names, order, kinds and defaults (compared by
  type and value, so ``3600`` is not ``3600.0``). Corolla may add keyword-only parameters
  with defaults after all of Flower's, nothing else;
- ``Grid`` and ``Strategy`` have exactly Flower's abstract methods.
"""

from __future__ import annotations

import enum
import importlib
import inspect
from dataclasses import dataclass

import pytest

# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


def _names(text: str) -> list[str]:
    return text.split()


# Flower module -> its public names (the union of 'missing' and 'present' in the reference).
# The Corolla module is the same path under ``corolla``.
FLOWER_NAMES: dict[str, list[str]] = {
    "flwr.app": _names("""
        Array ArrayRecord ConfigRecord ConfigRecordValues ConfigScalar ConfigScalarList
        Context DEFAULT_TTL Error Message MessageType Metadata MetricRecord MetricRecordValues
        MetricScalar MetricScalarList RecordDict UserConfig UserConfigValue
    """),
    "flwr.clientapp": ["ClientApp", "mod"],
    "flwr.clientapp.mod": _names("""
        LocalDpMod adaptiveclipping_mod arrays_size_mod fixedclipping_mod message_size_mod
    """),
    "flwr.common": _names("""
        Array ArrayRecord ClientMessage Code Config ConfigRecord ConfigRecordValues
        ConfigsRecord Context DEFAULT_TTL DisconnectRes Error EvaluateIns EvaluateRes
        EventType FitIns FitRes GRPC_MAX_MESSAGE_LENGTH GetParametersIns GetParametersRes
        GetPropertiesIns GetPropertiesRes Message MessageType MessageTypeLegacy Metadata
        MetricRecord MetricRecordValues Metrics MetricsAggregationFn MetricsRecord NDArray
        NDArrayFloat NDArrayInt NDArrays Parameters ParametersRecord Properties ReconnectIns
        RecordDict RecordSet Scalar ServerMessage Status Value array_from_numpy
        bytes_to_ndarray configure event log ndarray_to_bytes ndarrays_to_parameters now
        parameters_to_ndarrays
    """),
    "flwr.common.typing": _names("""
        ClientMessage Code Config DisconnectRes EvaluateIns EvaluateRes FitIns FitRes
        GetParametersIns GetParametersRes GetPropertiesIns GetPropertiesRes Metrics
        MetricsAggregationFn NDArray NDArrayFloat NDArrayInt NDArrays Parameters Properties
        ReconnectIns Scalar ServerMessage Status Value
    """),
    "flwr.serverapp": _names("""
        GaussianPrivacyEvent Grid NeighboringRelation PrivacyAccountant PrivacyConfig
        PrivacySpent RdpAccountant SamplingMethod ServerApp strategy
    """),
    "flwr.serverapp.strategy": _names("""
        Bulyan DifferentialPrivacyClientSideAdaptiveClipping
        DifferentialPrivacyClientSideFixedClipping
        DifferentialPrivacyServerSideAdaptiveClipping
        DifferentialPrivacyServerSideFixedClipping FedAdagrad FedAdam FedAvg FedAvgM FedMedian
        FedProx FedTrimmedAvg FedXgbBagging FedXgbCyclic FedYogi Krum MultiKrum QFedAvg Result
        Strategy
    """),
    "flwr.simulation": _names("""
        SimulationIoConnection run_simulation run_simulation_process start_simulation
    """),
}

# Flower modules without ``__all__`` (the reference: "flwr __all__=False").
NO_ALL = {"flwr.common.typing"}

_LEGACY = (
    "Flower's legacy pre-Message-API module (deprecated in Flower), not part of the Message "
    "API Corolla mirrors"
)
_REEXPORT = _LEGACY + "; Corolla has this name in {}"
_SIMULATION_IO = (
    "Flower's internal SimulationIo process plumbing: Corolla simulates through its "
    "ServerAppIo API and a local SuperLink"
)

# Qualified Flower name -> why Corolla leaves it out. Each is asserted ABSENT.
NOT_PROVIDED: dict[str, str] = {
    "flwr.client.Client": _LEGACY,
    "flwr.client.ClientApp": _REEXPORT.format("corolla.clientapp"),
    "flwr.client.ClientFn": _LEGACY,
    "flwr.client.ClientFnExt": _LEGACY,
    "flwr.client.NumPyClient": _LEGACY,
    "flwr.client.mod": _REEXPORT.format("corolla.clientapp"),
    "flwr.client.start_client": _LEGACY,
    "flwr.client.start_numpy_client": _LEGACY,
    "flwr.server.ClientManager": _LEGACY,
    "flwr.server.Driver": _LEGACY,
    "flwr.server.Grid": _REEXPORT.format("corolla.serverapp"),
    "flwr.server.History": _LEGACY,
    "flwr.server.LegacyContext": _LEGACY,
    "flwr.server.Server": _LEGACY,
    "flwr.server.ServerApp": _REEXPORT.format("corolla.serverapp"),
    "flwr.server.ServerAppComponents": _LEGACY,
    "flwr.server.ServerConfig": _LEGACY,
    "flwr.server.SimpleClientManager": _LEGACY,
    "flwr.server.start_server": _LEGACY,
    "flwr.server.strategy": _LEGACY,
    "flwr.server.workflow": _LEGACY,
    "flwr.simulation.start_simulation": "Flower's legacy simulation entry point (flwr.server API)",
    "flwr.simulation.run_simulation_process": _SIMULATION_IO,
    "flwr.simulation.SimulationIoConnection": _SIMULATION_IO,
}


def _corolla_module(flower_module: str) -> str:
    return "corolla" + flower_module.removeprefix("flwr")


def _split(qualified: str) -> tuple[str, str]:
    module, _, name = qualified.rpartition(".")
    return module, name


PROVIDED = [
    f"{module}.{name}"
    for module, names in FLOWER_NAMES.items()
    for name in names
    if f"{module}.{name}" not in NOT_PROVIDED
]

_MISSING = object()


def _lookup(module_name: str, name: str) -> object:
    """What ``from <module_name> import <name>`` gives a user, or `_MISSING`."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            return _MISSING
        raise  # the module exists but one of its own imports fails
    if hasattr(module, name):
        return getattr(module, name)
    try:
        return importlib.import_module(f"{module_name}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{module_name}.{name}":
            return _MISSING
        raise


@pytest.mark.parametrize("qualified", PROVIDED)
def test_flower_name_is_importable(qualified: str) -> None:
    flower_module, name = _split(qualified)
    module = _corolla_module(flower_module)
    if _lookup(module, name) is _MISSING:
        pytest.fail(f"`from {module} import {name}` fails (Flower: {qualified})")
    exported = getattr(importlib.import_module(module), "__all__", None)
    if flower_module not in NO_ALL and exported is not None and name not in exported:
        pytest.fail(f"{module}.{name} imports but is not in {module}.__all__ (Flower's is)")


@pytest.mark.parametrize("qualified", sorted(NOT_PROVIDED))
def test_not_provided_name_is_absent(qualified: str) -> None:
    flower_module, name = _split(qualified)
    module = _corolla_module(flower_module)
    if _lookup(module, name) is not _MISSING:
        pytest.fail(
            f"{module}.{name} now exists: move {qualified} from NOT_PROVIDED to FLOWER_NAMES "
            "(and give it a SIGNATURES entry if Flower lists one)"
        )


def test_not_provided_names_come_from_the_reference() -> None:
    for qualified in NOT_PROVIDED:
        flower_module, name = _split(qualified)
        if flower_module in FLOWER_NAMES:
            assert name in FLOWER_NAMES[flower_module], qualified


def _shared_names() -> list[tuple[str, str]]:
    """Pairs of qualified names Flower exports from two modules (the same object in both)."""
    first: dict[str, str] = {}
    pairs = []
    for qualified in PROVIDED:
        name = _split(qualified)[1]
        if name in first:
            pairs.append((first[name], qualified))
        else:
            first[name] = qualified
    return pairs


SHARED = _shared_names()


@pytest.mark.parametrize(("one", "other"), SHARED, ids=[other for _, other in SHARED])
def test_a_name_exported_twice_is_one_object(one: str, other: str) -> None:
    a = _lookup(_corolla_module(_split(one)[0]), _split(one)[1])
    b = _lookup(_corolla_module(_split(other)[0]), _split(other)[1])
    if a is _MISSING or b is _MISSING:
        pytest.fail(f"{one} or {other} is missing (see test_flower_name_is_importable)")
    assert a is b or a == b, f"{other} must be the same object as {one}, as in Flower"


# --------------------------------------------------------------------------------------------
# Signatures
# --------------------------------------------------------------------------------------------

POS_ONLY = "positional-only"
POS_OR_KW = "positional-or-keyword"
VAR_POS = "var-positional"
KW_ONLY = "keyword-only"
VAR_KW = "var-keyword"

_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: POS_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD: POS_OR_KW,
    inspect.Parameter.VAR_POSITIONAL: VAR_POS,
    inspect.Parameter.KEYWORD_ONLY: KW_ONLY,
    inspect.Parameter.VAR_KEYWORD: VAR_KW,
}


class _Marker:
    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


NO_DEFAULT = _Marker("no default")
FACTORY = _Marker("<factory>")  # a dataclass ``field(default_factory=...)``

Param = tuple[str, str, object]  # (name, kind, default)


def arg(name: str, default: object = NO_DEFAULT) -> Param:
    return (name, POS_OR_KW, default)


def kw(name: str, default: object = NO_DEFAULT) -> Param:
    return (name, KW_ONLY, default)


def star(name: str = "args") -> Param:
    return (name, VAR_POS, NO_DEFAULT)


@dataclass(frozen=True)
class Spec:
    """One member: ``kind`` is "class" (its constructor), "function", "method",
    "classmethod", "property-ro" or "property-rw"; ``params`` excludes ``self``/``cls``."""

    module: str
    kind: str
    params: tuple[Param, ...] = ()


APP = "corolla.app"
CLIENTAPP = "corolla.clientapp"
MOD = "corolla.clientapp.mod"
SERVERAPP = "corolla.serverapp"
STRATEGY = "corolla.serverapp.strategy"


def init(module: str, *params: Param) -> Spec:
    return Spec(module, "class", params)


def method(module: str, *params: Param) -> Spec:
    return Spec(module, "method", params)


def classmeth(module: str, *params: Param) -> Spec:
    return Spec(module, "classmethod", params)


def function(module: str, *params: Param) -> Spec:
    return Spec(module, "function", params)


def ro(module: str) -> Spec:
    return Spec(module, "property-ro")


def rw(module: str) -> Spec:
    return Spec(module, "property-rw")


def _inflatable(cls: str, is_dirty: Spec) -> dict[str, Spec]:
    """Members every Flower record (and Message) has as an inflatable object."""
    return {
        f"{cls}.children": ro(APP),
        f"{cls}.deflate": method(APP),
        f"{cls}.inflate": classmeth(APP, arg("object_content"), arg("children", None)),
        f"{cls}.is_dirty": is_dirty,
        f"{cls}.object_id": ro(APP),
    }


def _record(cls: str, is_dirty: Spec) -> dict[str, Spec]:
    return {
        **_inflatable(cls, is_dirty),
        f"{cls}.__getitem__": method(APP, arg("item")),
        f"{cls}.copy": method(APP),
    }


FEDAVG_PARAMS = (
    arg("fraction_train", 1.0),
    arg("fraction_evaluate", 1.0),
    arg("min_train_nodes", 2),
    arg("min_evaluate_nodes", 2),
    arg("min_available_nodes", 2),
    arg("weighted_by_key", "num-examples"),
    arg("arrayrecord_key", "arrays"),
    arg("configrecord_key", "config"),
    arg("train_metrics_aggr_fn", None),
    arg("evaluate_metrics_aggr_fn", None),
)
_KEYS_AND_AGGR_FNS = FEDAVG_PARAMS[5:]  # weighted_by_key ... evaluate_metrics_aggr_fn
_SAMPLING = FEDAVG_PARAMS[:5]  # fraction_train ... min_available_nodes
# FedAdam, FedAdagrad and FedYogi take everything by keyword only.
_FEDOPT_PARAMS = tuple(kw(name, default) for name, _, default in FEDAVG_PARAMS)

START_PARAMS = (
    arg("grid"),
    arg("initial_arrays"),
    arg("num_rounds", 3),
    arg("timeout", 3600),
    arg("train_config", None),
    arg("evaluate_config", None),
    arg("evaluate_fn", None),
)
_CONFIGURE = (arg("server_round"), arg("arrays"), arg("config"), arg("grid"))
_AGGREGATE = (arg("server_round"), arg("replies"))


def _strategy_hooks(cls: str) -> dict[str, Spec]:
    return {
        f"{cls}.start": method(STRATEGY, *START_PARAMS),
        f"{cls}.configure_train": method(STRATEGY, *_CONFIGURE),
        f"{cls}.aggregate_train": method(STRATEGY, *_AGGREGATE),
        f"{cls}.configure_evaluate": method(STRATEGY, *_CONFIGURE),
        f"{cls}.aggregate_evaluate": method(STRATEGY, *_AGGREGATE),
        f"{cls}.summary": method(STRATEGY),
    }


_DP_FIXED = (
    arg("strategy"),
    arg("noise_multiplier"),
    arg("clipping_norm"),
    arg("num_sampled_clients"),
    kw("accountant", None),
)
_DP_ADAPTIVE = (
    arg("strategy"),
    arg("noise_multiplier"),
    arg("num_sampled_clients"),
    arg("initial_clipping_norm", 0.1),
    arg("target_clipped_quantile", 0.5),
    arg("clip_norm_lr", 0.2),
    arg("clipped_count_stddev", None),
)
_MOD_PARAMS = (arg("msg"), arg("ctxt"), arg("call_next"))


def _accountant(cls: str) -> dict[str, Spec]:
    """The `PrivacyAccountant` protocol, which `RdpAccountant` implements."""
    return {
        f"{cls}.config": ro(SERVERAPP),
        f"{cls}.num_releases": ro(SERVERAPP),
        f"{cls}.compose": method(SERVERAPP, arg("event"), arg("count", 1)),
        f"{cls}.get_epsilon": method(SERVERAPP, arg("delta")),
        f"{cls}.get_delta": method(SERVERAPP, arg("epsilon")),
        f"{cls}.get_privacy_spent": method(SERVERAPP, arg("delta", None)),
        f"{cls}.would_exceed": method(
            SERVERAPP, arg("event"), arg("max_epsilon", None), arg("count", 1)
        ),
        f"{cls}.state_dict": method(SERVERAPP),
        f"{cls}.load_state_dict": method(SERVERAPP, arg("state")),
    }


# "<Name>.__init__" is the class's constructor, "<Name>.<member>" a member of the class,
# "<name>" a function of the module.
SIGNATURES: dict[str, Spec] = {
    # ---- corolla.app ----------------------------------------------------------------------
    "Array.__init__": init(
        APP,
        star(),
        kw("dtype", None),
        kw("shape", None),
        kw("stype", None),
        kw("data", None),
        kw("ndarray", None),
        kw("torch_tensor", None),
    ),
    "Array.children": ro(APP),
    "Array.deflate": method(APP),
    "Array.inflate": classmeth(APP, arg("object_content"), arg("children", None)),
    "Array.is_dirty": rw(APP),
    "Array.slice_array": method(APP),
    "ArrayRecord.__init__": init(
        APP,
        star(),
        kw("numpy_ndarrays", None),
        kw("torch_state_dict", None),
        kw("array_dict", None),
        kw("keep_input", True),
    ),
    **_record("ArrayRecord", rw(APP)),
    "ArrayRecord.from_array_dict": classmeth(APP, arg("array_dict"), kw("keep_input", True)),
    "ArrayRecord.from_numpy_ndarrays": classmeth(APP, arg("ndarrays"), kw("keep_input", True)),
    "ArrayRecord.from_torch_state_dict": classmeth(APP, arg("state_dict"), kw("keep_input", True)),
    "ArrayRecord.to_numpy_ndarrays": method(APP, kw("keep_input", True)),
    "ArrayRecord.to_torch_state_dict": method(APP, kw("keep_input", True)),
    "ConfigRecord.__init__": init(APP, arg("config_dict", None), arg("keep_input", True)),
    **_record("ConfigRecord", ro(APP)),
    "MetricRecord.__init__": init(APP, arg("metric_dict", None), arg("keep_input", True)),
    **_record("MetricRecord", ro(APP)),
    "RecordDict.__init__": init(
        APP,
        arg("records", None),
        kw("parameters_records", None),
        kw("metrics_records", None),
        kw("configs_records", None),
    ),
    **_record("RecordDict", ro(APP)),
    "RecordDict.parameters_records": ro(APP),
    "RecordDict.metrics_records": ro(APP),
    "RecordDict.configs_records": ro(APP),
    "Context.__init__": init(
        APP,
        arg("run_id"),
        arg("node_id"),
        arg("node_config"),
        arg("state"),
        arg("run_config"),
        arg("series_id", 0),
    ),
    "Error.__init__": init(APP, arg("code"), arg("reason", None)),
    "Error.code": ro(APP),
    "Error.reason": ro(APP),
    "Message.__init__": init(
        APP,
        star(),
        kw("dst_node_id", None),
        kw("message_type", None),
        kw("content", None),
        kw("error", None),
        kw("ttl", None),
        kw("group_id", None),
        kw("dst_task_id", None),
        kw("reply_to", None),
        kw("metadata", None),
    ),
    **_inflatable("Message", ro(APP)),
    "Message.metadata": ro(APP),
    "Message.content": rw(APP),
    "Message.error": rw(APP),
    "Message.has_content": method(APP),
    "Message.has_error": method(APP),
    "Message.create_reply": method(APP, arg("content"), arg("ttl", None)),
    "Message.create_error_reply": method(APP, arg("error"), arg("ttl", None)),
    "MessageType.__init__": init(APP),
    "Metadata.__init__": init(
        APP,
        arg("run_id"),
        arg("message_id"),
        arg("src_node_id"),
        arg("dst_node_id"),
        arg("reply_to_message_id"),
        arg("group_id"),
        arg("created_at"),
        arg("ttl"),
        arg("message_type"),
        arg("src_task_id", None),
        arg("dst_task_id", None),
    ),
    "Metadata.delivered_at": rw(APP),
    "Metadata.src_task_id": rw(APP),
    "Metadata.dst_task_id": rw(APP),
    # ---- corolla.clientapp ----------------------------------------------------------------
    "ClientApp.__init__": init(CLIENTAPP, arg("client_fn", None), arg("mods", None)),
    "ClientApp.train": method(CLIENTAPP, arg("action", "default"), kw("mods", None)),
    "ClientApp.evaluate": method(CLIENTAPP, arg("action", "default"), kw("mods", None)),
    "ClientApp.query": method(CLIENTAPP, arg("action", "default"), kw("mods", None)),
    "ClientApp.lifespan": method(CLIENTAPP),
    # ---- corolla.clientapp.mod ------------------------------------------------------------
    "LocalDpMod.__init__": init(
        MOD, arg("clipping_norm"), arg("sensitivity"), arg("epsilon"), arg("delta")
    ),
    "LocalDpMod.__call__": method(MOD, *_MOD_PARAMS),
    "fixedclipping_mod": function(MOD, *_MOD_PARAMS),
    "adaptiveclipping_mod": function(MOD, *_MOD_PARAMS),
    "message_size_mod": function(MOD, *_MOD_PARAMS),
    "arrays_size_mod": function(MOD, *_MOD_PARAMS),
    # ---- corolla.serverapp ----------------------------------------------------------------
    "Grid.__init__": init(SERVERAPP),
    "Grid.run": ro(SERVERAPP),
    "Grid.set_run": method(SERVERAPP, arg("run")),
    "Grid.create_message": method(
        SERVERAPP,
        arg("content"),
        arg("message_type"),
        arg("dst_node_id"),
        arg("group_id"),
        arg("ttl", None),
    ),
    "Grid.get_node_ids": method(SERVERAPP),
    "Grid.get_nodes": method(SERVERAPP),
    "Grid.push_messages": method(SERVERAPP, arg("messages")),
    "Grid.pull_messages": method(SERVERAPP, arg("message_ids")),
    "Grid.send_and_receive": method(SERVERAPP, arg("messages"), kw("timeout", None)),
    "ServerApp.__init__": init(
        SERVERAPP,
        arg("server", None),
        arg("config", None),
        arg("strategy", None),
        arg("client_manager", None),
        arg("server_fn", None),
    ),
    "ServerApp.main": method(SERVERAPP),
    "ServerApp.lifespan": method(SERVERAPP),
    "GaussianPrivacyEvent.__init__": init(
        SERVERAPP, arg("noise_multiplier"), arg("sample_size"), arg("population_size")
    ),
    "PrivacyConfig.__init__": init(
        SERVERAPP,
        arg("target_delta"),
        arg("population_size"),
        arg("neighboring_relation"),
        arg("sampling_method"),
        arg("max_epsilon", None),
    ),
    "PrivacySpent.__init__": init(
        SERVERAPP,
        arg("epsilon"),
        arg("delta"),
        arg("num_releases"),
        arg("accounting_method"),
        arg("optimal_order", None),
    ),
    "RdpAccountant.__init__": init(SERVERAPP, arg("config"), arg("orders", None)),
    **_accountant("RdpAccountant"),
    **_accountant("PrivacyAccountant"),
    # ---- corolla.serverapp.strategy -------------------------------------------------------
    "Strategy.__init__": init(STRATEGY),
    **_strategy_hooks("Strategy"),
    "Result.__init__": init(
        STRATEGY,
        arg("arrays", FACTORY),
        arg("train_metrics_clientapp", FACTORY),
        arg("evaluate_metrics_clientapp", FACTORY),
        arg("evaluate_metrics_serverapp", FACTORY),
    ),
    "FedAvg.__init__": init(STRATEGY, *FEDAVG_PARAMS),
    **_strategy_hooks("FedAvg"),
    "FedProx.__init__": init(STRATEGY, *FEDAVG_PARAMS, arg("proximal_mu", 0.0)),
    "FedAvgM.__init__": init(
        STRATEGY,
        *FEDAVG_PARAMS,
        arg("server_learning_rate", 1.0),
        arg("server_momentum", 0.0),
    ),
    "FedMedian.__init__": init(STRATEGY, *FEDAVG_PARAMS),
    "FedTrimmedAvg.__init__": init(STRATEGY, *FEDAVG_PARAMS, arg("beta", 0.2)),
    "FedXgbBagging.__init__": init(STRATEGY, *FEDAVG_PARAMS),
    "FedXgbCyclic.__init__": init(
        STRATEGY,
        arg("fraction_train", 1.0),
        arg("fraction_evaluate", 1.0),
        arg("min_available_nodes", 2),
        *_KEYS_AND_AGGR_FNS,
    ),
    "FedAdam.__init__": init(
        STRATEGY,
        *_FEDOPT_PARAMS,
        kw("eta", 0.1),
        kw("eta_l", 0.1),
        kw("beta_1", 0.9),
        kw("beta_2", 0.99),
        kw("tau", 0.001),
    ),
    "FedAdagrad.__init__": init(
        STRATEGY, *_FEDOPT_PARAMS, kw("eta", 0.1), kw("eta_l", 0.1), kw("tau", 0.001)
    ),
    "FedYogi.__init__": init(
        STRATEGY,
        *_FEDOPT_PARAMS,
        kw("eta", 0.01),
        kw("eta_l", 0.0316),
        kw("beta_1", 0.9),
        kw("beta_2", 0.99),
        kw("tau", 0.001),
    ),
    "MultiKrum.__init__": init(
        STRATEGY,
        *_SAMPLING,
        arg("num_malicious_nodes", 0),
        arg("num_nodes_to_select", 1),
        *_KEYS_AND_AGGR_FNS,
    ),
    "Krum.__init__": init(STRATEGY, *_SAMPLING, arg("num_malicious_nodes", 0), *_KEYS_AND_AGGR_FNS),
    "Bulyan.__init__": init(
        STRATEGY,
        *_SAMPLING,
        arg("num_malicious_nodes", 0),
        *_KEYS_AND_AGGR_FNS,
        arg("selection_rule", None),
    ),
    "QFedAvg.__init__": init(
        STRATEGY,
        arg("client_learning_rate"),
        arg("q", 0.1),
        arg("train_loss_key", "train_loss"),
        *FEDAVG_PARAMS,
    ),
    "DifferentialPrivacyServerSideFixedClipping.__init__": init(STRATEGY, *_DP_FIXED),
    "DifferentialPrivacyClientSideFixedClipping.__init__": init(STRATEGY, *_DP_FIXED),
    "DifferentialPrivacyServerSideAdaptiveClipping.__init__": init(STRATEGY, *_DP_ADAPTIVE),
    "DifferentialPrivacyClientSideAdaptiveClipping.__init__": init(STRATEGY, *_DP_ADAPTIVE),
}

# Abstract members a Flower subclass must (and may only need to) implement.
ABSTRACT_METHODS: dict[str, tuple[str, set[str]]] = {
    "Grid": (
        SERVERAPP,
        {
            "create_message",
            "get_node_ids",
            "pull_messages",
            "push_messages",
            "run",
            "send_and_receive",
            "set_run",
        },
    ),
    "Strategy": (
        STRATEGY,
        {
            "aggregate_evaluate",
            "aggregate_train",
            "configure_evaluate",
            "configure_train",
            "summary",
        },
    ),
}

# Enumerations: member name -> value (both are ``str`` enums in Flower).
ENUM_VALUES: dict[str, tuple[str, dict[str, str]]] = {
    "NeighboringRelation": (
        SERVERAPP,
        {"ADD_OR_REMOVE_ONE": "add-or-remove-one", "REPLACE_ONE": "replace-one"},
    ),
    "SamplingMethod": (
        SERVERAPP,
        {
            "POISSON": "poisson",
            "WITHOUT_REPLACEMENT": "without-replacement",
            "NO_AMPLIFICATION": "no-amplification",
        },
    ),
}


def _resolve(module: str, name: str) -> object:
    obj = _lookup(module, name)
    if obj is _MISSING:
        pytest.fail(f"{name}: `from {module} import {name}` fails")
    return obj


def _member_kind(raw: object) -> str:
    if isinstance(raw, property):
        return "property-ro" if raw.fset is None else "property-rw"
    if isinstance(raw, classmethod):
        return "classmethod"
    if isinstance(raw, staticmethod):
        return "staticmethod"
    if inspect.isfunction(raw):
        return "method"
    return f"plain attribute ({type(raw).__name__})"


def _corolla_signature(key: str, spec: Spec) -> inspect.Signature | None:
    """The Corolla signature for ``key``, without ``self``/``cls``; fails on a kind mismatch."""
    owner_name, _, member = key.rpartition(".")
    if spec.kind == "function":
        return inspect.signature(_resolve(spec.module, key))  # type: ignore[arg-type]
    owner = _resolve(spec.module, owner_name)
    if not inspect.isclass(owner):
        pytest.fail(f"{key}: {spec.module}.{owner_name} is not a class")
    if spec.kind == "class":
        return inspect.signature(owner)
    raw = inspect.getattr_static(owner, member, _MISSING)
    if raw is _MISSING:
        pytest.fail(f"{key}: missing in Corolla (Flower has a {spec.kind})")
    kind = _member_kind(raw)
    if kind != spec.kind:
        pytest.fail(f"{key}: is a {kind} in Corolla, a {spec.kind} in Flower")
    if spec.kind.startswith("property"):
        return None
    function_ = raw.__func__ if isinstance(raw, classmethod) else raw
    signature = inspect.signature(function_)
    without_self = list(signature.parameters.values())[1:]
    return signature.replace(parameters=without_self)


def _default(parameter: inspect.Parameter) -> object:
    if parameter.default is inspect.Parameter.empty:
        return NO_DEFAULT
    if repr(parameter.default) == "<factory>":
        return FACTORY
    return parameter.default


def _same_default(a: object, b: object) -> bool:
    if isinstance(a, _Marker) or isinstance(b, _Marker):
        return a is b
    return type(a) is type(b) and a == b


def _show(default: object) -> str:
    return "no default" if default is NO_DEFAULT else f"default {default!r}"


def _label(name: str, kind: str) -> str:
    """A ``*args`` parameter's name is invisible to callers: compare it by kind alone."""
    return "*args" if kind == VAR_POS else name


# Parameters Flower requires and Corolla lets callers leave out (a default where Flower has
# none): every call Flower accepts means the same in Corolla. Each entry says why.
DEFAULT_ADDED: dict[str, dict[str, str]] = {
    "Context.__init__": {
        name: "an empty dict/RecordDict, so tests and tools can write Context(run_id, node_id)"
        for name in ("node_config", "state", "run_config")
    },
}


def signature_problems(
    flower: tuple[Param, ...],
    corolla: inspect.Signature,
    default_added: frozenset[str] = frozenset(),
) -> list[str]:
    """How ``corolla`` differs from Flower's parameters, one line per difference."""
    problems = []
    mine = {
        _label(p.name, _KINDS[p.kind]): (_KINDS[p.kind], _default(p))
        for p in corolla.parameters.values()
    }
    flower = tuple((_label(name, kind), kind, default) for name, kind, default in flower)
    for name, kind, default in flower:
        if name not in mine:
            problems.append(f"`{name}` is missing in Corolla ({kind}, {_show(default)})")
            continue
        my_kind, my_default = mine[name]
        if my_kind != kind:
            problems.append(f"`{name}` is {my_kind} in Corolla, {kind} in Flower")
        if default is NO_DEFAULT and name in default_added and my_default is not NO_DEFAULT:
            continue
        if not _same_default(my_default, default):
            problems.append(
                f"`{name}` has {_show(my_default)} in Corolla, {_show(default)} in Flower"
            )
    theirs = [name for name, _, _ in flower]
    order = [name for name in mine if name in theirs]
    if order != [name for name in theirs if name in mine]:
        problems.append(
            f"parameter order is ({', '.join(order)}) in Corolla, ({', '.join(theirs)}) in Flower"
        )
    last_flower = max((list(mine).index(name) for name in theirs if name in mine), default=-1)
    for index, (name, (kind, default)) in enumerate(mine.items()):
        if name in theirs:
            continue
        if kind != KW_ONLY or default is NO_DEFAULT:
            problems.append(
                f"Corolla adds `{name}` ({kind}, {_show(default)}): only "
                "keyword-only parameters with defaults may be added"
            )
        elif index < last_flower:
            problems.append(
                f"Corolla adds `{name}` before Flower's last parameter: "
                "extras must come after all of Flower's"
            )
    return problems


@pytest.mark.parametrize("key", list(SIGNATURES))
def test_signature_matches_flower(key: str) -> None:
    spec = SIGNATURES[key]
    corolla = _corolla_signature(key, spec)
    if corolla is None:  # a property: its kind is all there is to compare
        return
    problems = signature_problems(spec.params, corolla, frozenset(DEFAULT_ADDED.get(key, {})))
    if problems:
        pytest.fail("\n".join(f"{key}: {problem}" for problem in problems))


@pytest.mark.parametrize("cls", list(ABSTRACT_METHODS), ids="{}.__abstractmethods__".format)
def test_abstract_methods_match_flower(cls: str) -> None:
    module, flower = ABSTRACT_METHODS[cls]
    corolla = set(getattr(_resolve(module, cls), "__abstractmethods__", ()))
    problems = []
    if flower - corolla:
        problems.append(f"not abstract in Corolla: {sorted(flower - corolla)}")
    if corolla - flower:
        problems.append(
            f"abstract in Corolla only (a Flower subclass lacks them): {sorted(corolla - flower)}"
        )
    if problems:
        pytest.fail(f"{cls}: " + "; ".join(problems))


@pytest.mark.parametrize("cls", list(ENUM_VALUES), ids="{}.__members__".format)
def test_enum_members_match_flower(cls: str) -> None:
    module, flower = ENUM_VALUES[cls]
    corolla = _resolve(module, cls)
    assert inspect.isclass(corolla), f"{cls} is not a class"
    assert issubclass(corolla, str) and issubclass(corolla, enum.Enum), f"{cls}: a str Enum"
    assert {m.name: m.value for m in corolla} == flower


def test_signature_table_names_flower_names() -> None:
    """Every table row belongs to a name in FLOWER_NAMES (catches a typo in the tables)."""
    rows = [(spec.module, key.rpartition(".")[0] or key) for key, spec in SIGNATURES.items()]
    rows += [(module, cls) for cls, (module, _) in {**ABSTRACT_METHODS, **ENUM_VALUES}.items()]
    for module, name in rows:
        assert name in FLOWER_NAMES["flwr" + module.removeprefix("corolla")], (module, name)
