"""The digits example trains to >= 0.90 centralised accuracy on two in-process nodes, quickly."""

from __future__ import annotations

import importlib
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from corolla.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from corolla.records import UserConfig
from corolla.simulation import InProcessGrid

pytestmark = pytest.mark.timeout(60)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "digits"


@pytest.fixture(scope="module")
def digits() -> Iterator[dict[str, ModuleType]]:
    """The example's modules, imported the way the runtime would: from the app's directory."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        yield {
            name: importlib.import_module(f"digits.{name}")
            for name in ("task", "client_app", "server_app")
        }
    finally:
        sys.path.remove(str(EXAMPLE))


def default_run_config() -> UserConfig:
    with (EXAMPLE / "pyproject.toml").open("rb") as f:
        config: UserConfig = tomllib.load(f)["tool"]["flwr"]["app"]["config"]
    return config


def two_node_grid(digits: dict[str, ModuleType], run_config: UserConfig) -> InProcessGrid:
    return InProcessGrid(
        digits["client_app"].app,
        num_nodes=2,
        node_configs={
            1: {"partition-id": 0, "num-partitions": 2},
            2: {"partition-id": 1, "num-partitions": 2},
        },
        run_config=run_config,
    )


def test_pyproject_declares_the_app() -> None:
    with (EXAMPLE / "pyproject.toml").open("rb") as f:
        pyproject = tomllib.load(f)
    assert pyproject["project"]["name"] == "digits"
    assert pyproject["project"]["dependencies"] == ["corolla", "scikit-learn>=1.4"]
    assert pyproject["build-system"]["build-backend"] == "setuptools.build_meta"
    flwr = pyproject["tool"]["flwr"]
    assert flwr["app"]["components"] == {
        "serverapp": "digits.server_app:app",
        "clientapp": "digits.client_app:app",
    }
    assert flwr["federations"]["local"] == {"address": "127.0.0.1:9093", "insecure": True}
    assert set(default_run_config()) == {
        "num-server-rounds",
        "fraction-train",
        "local-epochs",
        "learning-rate",
        "min-nodes",
    }


def test_serverapp_reaches_90_percent_centralised_accuracy(
    digits: dict[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    run_config = default_run_config()
    num_rounds = int(run_config["num-server-rounds"])
    grid = two_node_grid(digits, run_config)
    context = Context(run_id=grid.run_id, node_id=0, run_config=run_config)

    digits["server_app"].app(grid, context)

    out = capsys.readouterr().out
    rounds = re.findall(r"^round (\d+)/(\d+): centralised accuracy ([\d.]+), loss", out, re.M)
    assert [int(r) for r, _, _ in rounds] == list(range(num_rounds + 1))
    assert {int(total) for _, total, _ in rounds} == {num_rounds}
    final = re.search(r"^final centralised accuracy: ([\d.]+)$", out, re.M)
    assert final is not None, out
    assert float(final.group(1)) >= 0.90
    assert float(rounds[0][2]) < 0.5  # it did learn: the initial model is near chance


def test_clientapp_replies_match_the_strategy_contract(digits: dict[str, ModuleType]) -> None:
    task = digits["task"]
    grid = two_node_grid(digits, default_run_config())
    arrays = ArrayRecord(task.init_weights())
    config = ConfigRecord({"lr": 0.1, "server-round": 1})
    content = RecordDict({"arrays": arrays, "config": config})
    replies = grid.send_and_receive(
        [
            Message(content, dst_node_id=1, message_type=MessageType.TRAIN),
            Message(content, dst_node_id=2, message_type=MessageType.EVALUATE),
        ],
        timeout=10,
    )
    by_type = {reply.metadata.message_type: reply for reply in replies}
    train, evaluate = by_type[MessageType.TRAIN], by_type[MessageType.EVALUATE]
    train_metrics = train.content["metrics"]
    x_train, _, x_local_test, _ = task.load_partition(0, 2)
    assert train_metrics["num-examples"] == len(x_train)
    assert train_metrics["train-loss"] > 0
    new = train.content["arrays"]
    assert [a.shape for a in new.values()] == [a.shape for a in arrays.values()]
    assert [a.dtype for a in new.values()] == ["float32"] * 4
    assert new != arrays
    eval_metrics = evaluate.content["metrics"]
    assert set(eval_metrics) == {"loss", "accuracy", "num-examples"}
    assert eval_metrics["num-examples"] == len(task.load_partition(1, 2)[2])
    assert 0.0 <= eval_metrics["accuracy"] <= 1.0
    assert len(x_local_test) > 0


def test_partitions_are_disjoint_iid_shards_of_the_train_split(
    digits: dict[str, ModuleType],
) -> None:
    task = digits["task"]
    x_train, y_train, x_test, _ = task.load_data()
    assert len(x_test) == int(0.2 * (len(x_train) + len(x_test)))
    assert x_train.dtype == np.float32 and x_train.min() >= 0.0 and x_train.max() <= 1.0

    rows: list[bytes] = []
    labels: list[int] = []
    for partition_id in range(3):
        x_tr, y_tr, x_te, y_te = task.load_partition(partition_id, 3)
        assert set(y_tr.tolist()) == set(range(10))  # IID: every class on every node
        rows.extend(map(bytes, np.concatenate([x_tr, x_te]).view(np.uint8)))
        labels.extend([*y_tr.tolist(), *y_te.tolist()])
        assert len(x_tr) > 3 * len(x_te) > 0
    assert len(rows) == len(x_train)  # the shards cover the train split exactly once
    assert sorted(labels) == sorted(y_train.tolist())
    assert sorted(rows) == sorted(map(bytes, x_train.view(np.uint8)))  # nothing from the test split

    whole = task.load_partition(0, 1)
    assert len(whole[0]) + len(whole[2]) == len(x_train)
    with pytest.raises(ValueError, match="partition-id"):
        task.load_partition(2, 2)


def test_train_leaves_read_only_inputs_alone_and_learns(digits: dict[str, ModuleType]) -> None:
    task = digits["task"]
    weights = ArrayRecord(task.init_weights()).to_numpy_ndarrays()  # read-only views
    x, y, x_te, y_te = task.load_partition(0, 1)
    before = [w.copy() for w in weights]
    trained = task.train(weights, x, y, epochs=5, lr=0.1)
    assert all(np.array_equal(a, b) for a, b in zip(weights, before, strict=True))
    loss_before, acc_before = task.evaluate(weights, x_te, y_te)
    loss_after, acc_after = task.evaluate(trained, x_te, y_te)
    assert loss_after < loss_before and acc_after > max(acc_before, 0.8)
