"""Constructor signatures of the weighted-mean strategies, checked against Flower's (1.42)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from corolla.serverapp.strategy.fedadagrad import FedAdagrad
from corolla.serverapp.strategy.fedadam import FedAdam
from corolla.serverapp.strategy.fedavg import FedAvg
from corolla.serverapp.strategy.fedavgm import FedAvgM
from corolla.serverapp.strategy.fedopt import FedOpt
from corolla.serverapp.strategy.fedprox import FedProx
from corolla.serverapp.strategy.fedyogi import FedYogi
from corolla.serverapp.strategy.qfedavg import QFedAvg

POS = inspect.Parameter.POSITIONAL_OR_KEYWORD
KW = inspect.Parameter.KEYWORD_ONLY
REQUIRED = inspect.Parameter.empty

FEDAVG: list[tuple[str, Any]] = [
    ("fraction_train", 1.0),
    ("fraction_evaluate", 1.0),
    ("min_train_nodes", 2),
    ("min_evaluate_nodes", 2),
    ("min_available_nodes", 2),
    ("weighted_by_key", "num-examples"),
    ("arrayrecord_key", "arrays"),
    ("configrecord_key", "config"),
    ("train_metrics_aggr_fn", None),
    ("evaluate_metrics_aggr_fn", None),
]
ADAM_LIKE = [("eta", 1e-1), ("eta_l", 1e-1), ("beta_1", 0.9), ("beta_2", 0.99), ("tau", 1e-3)]

# Flower's parameters as (name, default), in order, and whether they are keyword-only.
FLOWER: dict[type, tuple[list[tuple[str, Any]], bool]] = {
    FedAvg: (FEDAVG, False),
    FedProx: ([*FEDAVG, ("proximal_mu", 0.0)], False),
    FedAvgM: ([*FEDAVG, ("server_learning_rate", 1.0), ("server_momentum", 0.0)], False),
    QFedAvg: (
        [("client_learning_rate", REQUIRED), ("q", 0.1), ("train_loss_key", "train_loss"), *FEDAVG],
        False,
    ),
    FedOpt: (
        [*FEDAVG, ("eta", 1e-1), ("eta_l", 1e-1), ("beta_1", 0.0), ("beta_2", 0.0), ("tau", 1e-3)],
        True,
    ),
    FedAdam: ([*FEDAVG, *ADAM_LIKE], True),
    FedAdagrad: ([*FEDAVG, ("eta", 1e-1), ("eta_l", 1e-1), ("tau", 1e-3)], True),
    FedYogi: (
        [
            *FEDAVG,
            ("eta", 1e-2),
            ("eta_l", 0.0316),
            ("beta_1", 0.9),
            ("beta_2", 0.99),
            ("tau", 1e-3),
        ],
        True,
    ),
}
COROLLA_EXTRAS = [("min_usable_replies", 1), ("min_usable_fraction", 0.0)]  # keyword-only


@pytest.mark.parametrize("cls", list(FLOWER), ids=lambda c: c.__name__)
def test_constructor_matches_flower(cls: type) -> None:
    expected, keyword_only = FLOWER[cls]
    params = list(inspect.signature(cls).parameters.values())
    flower_part, extras = params[: len(expected)], params[len(expected) :]
    assert [(p.name, p.default) for p in flower_part] == expected
    assert all(p.kind == (KW if keyword_only else POS) for p in flower_part)
    assert [(p.name, p.default, p.kind) for p in extras] == [(n, d, KW) for n, d in COROLLA_EXTRAS]
    defaults = {name: type(default) for name, default in expected if default is not REQUIRED}
    assert {p.name: type(p.default) for p in flower_part if p.name in defaults} == defaults


def test_every_strategy_builds_with_its_defaults_and_summarizes() -> None:
    for cls in FLOWER:
        strategy = cls(0.1) if cls is QFedAvg else cls()
        strategy.summary()
