"""FedXgbBagging and FedXgbCyclic with real XGBoost boosters on scikit-learn's bundled data."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import xgboost as xgb
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split

from corolla.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.common.errors import InvalidArgument
from corolla.records import MessageType
from corolla.serverapp.strategy.fedxgb_bagging import FedXgbBagging, aggregate_bagging
from corolla.serverapp.strategy.fedxgb_cyclic import FedXgbCyclic
from corolla.simulation import InProcessGrid

pytestmark = pytest.mark.timeout(120)

BINARY = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1}
EMPTY = ArrayRecord([np.frombuffer(b"", dtype=np.uint8)])  # the first round's global model
Data = tuple[npt.NDArray[Any], npt.NDArray[Any]]


def split(dataset: Any, parts: int) -> tuple[list[Data], Data]:
    """``parts`` training partitions (every ``parts``-th row) and a held-out test set."""
    x, y = dataset(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0)
    partitions = [(x_train[i::parts], y_train[i::parts]) for i in range(parts)]
    return partitions, (x_test, y_test)


def train(params: dict[str, Any], data: Data, rounds: int, base: xgb.Booster | None = None) -> Any:
    return xgb.train(params, xgb.DMatrix(data[0], label=data[1]), rounds, xgb_model=base)


def as_arrays(booster: xgb.Booster) -> ArrayRecord:
    return ArrayRecord([np.frombuffer(booster.save_raw("json"), dtype=np.uint8)])


def as_booster(arrays: ArrayRecord) -> xgb.Booster:
    return xgb.Booster(model_file=bytearray(arrays["0"].numpy().tobytes()))


def reply(node_id: int, arrays: ArrayRecord, examples: int = 1) -> Message:
    sent = Message(RecordDict(), dst_node_id=node_id, message_type=MessageType.TRAIN)
    metrics = MetricRecord({"num-examples": examples, "loss": float(node_id)})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=sent)


def margin(booster: xgb.Booster, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return np.asarray(booster.predict(xgb.DMatrix(x), output_margin=True))


def trees_of(arrays: ArrayRecord) -> dict[str, Any]:
    model = json.loads(arrays["0"].numpy().tobytes())
    return dict(model["learner"]["gradient_booster"]["model"])


# -- FedXgbBagging ---------------------------------------------------------------------------------


def test_bagging_k_boosters_of_t_trees_gives_k_times_t_trees() -> None:
    partitions, (x_test, _) = split(load_breast_cancer, 3)
    params = {**BINARY, "base_score": 0.5}  # margin of the base score: logit(0.5) = 0
    boosters = [train(params, data, rounds=2) for data in partitions]
    replies = [reply(i, as_arrays(b), examples=10 * i) for i, b in enumerate(boosters, start=1)]
    arrays, metrics = FedXgbBagging().aggregate_train(1, replies[::-1])  # any arrival order
    assert arrays is not None and metrics is not None
    merged = as_booster(arrays)
    # 3 boosters x 2 trees; every iteration kept: 6 iterations of one tree.
    assert len(merged.get_dump()) == 6 and merged.num_boosted_rounds() == 6
    trees = trees_of(arrays)
    assert [tree["id"] for tree in trees["trees"]] == list(range(6))
    assert trees["iteration_indptr"] == list(range(7))
    # An additive ensemble's margin is the base margin (0) plus every tree's leaf value, so
    # the merged margin is the sum of the three boosters' margins.
    expected = sum(margin(b, x_test) for b in boosters)
    np.testing.assert_allclose(margin(merged, x_test), expected, atol=1e-5)
    assert metrics["loss"] == pytest.approx((10 * 1 + 20 * 2 + 30 * 3) / 60)


def test_bagging_keeps_each_trees_class_for_multiclass_models() -> None:
    partitions, (x_test, _) = split(load_digits, 3)
    params = {"objective": "multi:softprob", "num_class": 10, "max_depth": 2, "nthread": 1}
    params["base_score"] = 0.5
    boosters = [train(params, data, rounds=2) for data in partitions]
    merged_bytes = b""
    for booster in boosters:
        merged_bytes = aggregate_bagging(merged_bytes, bytes(booster.save_raw("json")))
    merged = xgb.Booster(model_file=bytearray(merged_bytes))
    # 3 boosters x 2 iterations x 10 classes; tree_info is the class of each tree.
    model = json.loads(merged_bytes)["learner"]["gradient_booster"]["model"]
    assert len(model["trees"]) == 60 and merged.num_boosted_rounds() == 6
    assert model["tree_info"] == list(range(10)) * 6
    assert model["iteration_indptr"] == list(range(0, 61, 10))
    # Per class: base margin 0.5 plus all trees = sum of the 3 margins - 2 extra bases.
    expected = sum(margin(b, x_test) for b in boosters) - 2 * 0.5
    np.testing.assert_allclose(margin(merged, x_test), expected, atol=1e-4)


def test_bagging_appends_new_trees_to_the_global_model() -> None:
    partitions, (x_test, _) = split(load_breast_cancer, 3)
    glob = train(BINARY, partitions[0], rounds=3)
    grid = InProcessGrid(ClientApp(), num_nodes=3)
    strategy = FedXgbBagging()
    strategy.configure_train(2, as_arrays(glob), ConfigRecord(), grid)
    assert strategy.current_bst == bytes(glob.save_raw("json"))
    # Each node boosts one more round from the global model and sends only that tree.
    grown = [
        train(BINARY, data, rounds=1, base=xgb.Booster(model_file=glob.save_raw("json")))
        for data in partitions
    ]
    replies = [reply(i, as_arrays(b[3:4])) for i, b in enumerate(grown, start=1)]
    assert all(strategy.check_train_reply(r, as_arrays(glob)) is None for r in replies)
    arrays, _ = strategy.aggregate_train(2, replies)
    assert arrays is not None
    merged = as_booster(arrays)
    assert merged.num_boosted_rounds() == 3 + 3
    # Margin: the global model's plus each node's new tree (its margin over the global's).
    base = margin(glob, x_test)
    expected = base + sum(margin(b, x_test) - base for b in grown)
    np.testing.assert_allclose(margin(merged, x_test), expected, atol=1e-5)
    assert strategy.current_bst == arrays["0"].numpy().tobytes()


def test_bagging_refuses_replies_it_cannot_merge() -> None:
    partitions, _ = split(load_breast_cancer, 3)
    glob = train(BINARY, partitions[0], rounds=1)
    strategy = FedXgbBagging()
    sent = as_arrays(glob)
    strategy.configure_train(1, sent, ConfigRecord(), InProcessGrid(ClientApp(), num_nodes=2))
    x, y = partitions[1]
    fewer = train(BINARY, (x[:, :10], y), rounds=1)  # 10 features, not 30
    dart = train({**BINARY, "booster": "dart"}, partitions[1], rounds=1)
    cases = {
        "its num_feature is '10', the global model's '30'": as_arrays(fewer),
        "only gbtree boosters can be bagged, not 'dart'": as_arrays(dart),
        "not JSON": ArrayRecord([np.frombuffer(b"\x00\x01", dtype=np.uint8)]),
        "expected one array": ArrayRecord([np.zeros(2, dtype=np.uint8)] * 2),
        "expected a 1-D uint8 array": ArrayRecord([np.zeros(2)]),
    }
    for expected, arrays in cases.items():
        reason = strategy.check_train_reply(reply(2, arrays), sent)
        assert reason is not None and expected in reason, reason
    # In the first round there is no global model to compare with; the merge refuses.
    with pytest.raises(InvalidArgument, match="node 2's model cannot be merged: its num_feature"):
        FedXgbBagging().aggregate_train(1, [reply(1, sent), reply(2, as_arrays(fewer))])


def bagging_app(partitions: list[Data], local_rounds: int) -> ClientApp:
    """Flower's bagging client: boost ``local_rounds`` on the local data from the global model
    (from scratch in the first round) and send the trees added."""
    app = ClientApp()

    @app.train()
    def fit(msg: Message, context: Context) -> Message:
        data = partitions[context.node_id - 1]
        raw = msg.content["arrays"]["0"].numpy().tobytes()
        base = xgb.Booster(model_file=bytearray(raw)) if raw else None
        booster = train(BINARY, data, rounds=local_rounds, base=base)
        if base is not None:
            total = booster.num_boosted_rounds()
            booster = booster[total - local_rounds : total]
        metrics = MetricRecord({"num-examples": len(data[1])})
        return Message(RecordDict({"arrays": as_arrays(booster), "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        x, y = partitions[context.node_id - 1]
        booster = as_booster(msg.content["arrays"])
        accuracy = float(np.mean((booster.predict(xgb.DMatrix(x)) > 0.5) == y))
        metrics = MetricRecord({"num-examples": len(y), "accuracy": accuracy})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


def test_bagging_run_in_process() -> None:
    partitions, (x_test, y_test) = split(load_breast_cancer, 3)
    grid = InProcessGrid(bagging_app(partitions, local_rounds=2), num_nodes=3)
    strategy = FedXgbBagging(min_available_nodes=3, min_train_nodes=3, min_evaluate_nodes=3)
    result = strategy.start(grid=grid, initial_arrays=EMPTY, num_rounds=3, timeout=30)
    merged = as_booster(result.arrays)
    assert merged.num_boosted_rounds() == 3 * 3 * 2  # rounds x nodes x local rounds
    accuracy = np.mean((merged.predict(xgb.DMatrix(x_test)) > 0.5) == y_test)
    assert accuracy >= 0.9
    assert result.evaluate_metrics_clientapp[3]["accuracy"] >= 0.9


# -- FedXgbCyclic ----------------------------------------------------------------------------------


def cyclic_app(partitions: list[Data], local_rounds: int, seen: list[tuple[str, int]]) -> ClientApp:
    """Train the global model further on the local data; send the whole model."""
    app = ClientApp()

    @app.train()
    def fit(msg: Message, context: Context) -> Message:
        seen.append(("train", context.node_id))
        raw = msg.content["arrays"]["0"].numpy().tobytes()
        base = xgb.Booster(model_file=bytearray(raw)) if raw else None
        data = partitions[context.node_id - 1]
        booster = train(BINARY, data, rounds=local_rounds, base=base)
        metrics = MetricRecord({"num-examples": len(data[1])})
        return Message(RecordDict({"arrays": as_arrays(booster), "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        seen.append(("evaluate", context.node_id))
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)

    return app


def test_cyclic_run_trains_one_node_per_round_in_turn_and_improves() -> None:
    partitions, (x_test, y_test) = split(load_breast_cancer, 3)
    seen: list[tuple[str, int]] = []
    losses: dict[int, float] = {}

    def held_out(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None  # no model yet
        p = np.clip(as_booster(arrays).predict(xgb.DMatrix(x_test)), 1e-7, 1 - 1e-7)
        losses[server_round] = float(-np.mean(y_test * np.log(p) + (1 - y_test) * np.log(1 - p)))
        return MetricRecord({"logloss": losses[server_round]})

    grid = InProcessGrid(cyclic_app(partitions, 1, seen), num_nodes=3)
    strategy = FedXgbCyclic(min_available_nodes=3)
    result = strategy.start(
        grid=grid, initial_arrays=EMPTY, num_rounds=6, timeout=30, evaluate_fn=held_out
    )
    # Round r trains and evaluates on node (r - 1) % 3 + 1, passing the model along.
    assert [node for kind, node in seen if kind == "train"] == [1, 2, 3, 1, 2, 3]
    assert [node for kind, node in seen if kind == "evaluate"] == [1, 2, 3, 1, 2, 3]
    final = as_booster(result.arrays)
    assert final.num_boosted_rounds() == 6  # one local round per round
    assert losses[6] < losses[3] < losses[1]  # held-out log loss falls as the model goes round
    assert np.mean((final.predict(xgb.DMatrix(x_test)) > 0.5) == y_test) >= 0.9
    assert result.train_metrics_clientapp[2]["num-examples"] == len(partitions[1][1])


class ChangingGrid(InProcessGrid):
    """An InProcessGrid whose online nodes are set by the test."""

    online: list[int] = []

    def get_node_ids(self) -> list[int]:
        return list(self.online)


def test_cyclic_numbers_nodes_as_first_seen_and_keeps_the_numbering() -> None:
    grid = ChangingGrid(ClientApp(), num_nodes=5)
    strategy = FedXgbCyclic()
    grid.online = [3, 1]  # numbered 1 -> 1, 3 -> 2
    assert [strategy.turn(r, grid) for r in (1, 2, 3)] == [1, 3, 1]
    grid.online = [5, 3, 1, 2]  # new: 2 -> 3, 5 -> 4; order 1, 3, 2, 5
    assert [strategy.turn(r, grid) for r in (1, 2, 3, 4, 5)] == [1, 3, 2, 5, 1]
    grid.online = [5, 2]  # node 1 and 3 gone: the others keep their order
    assert [strategy.turn(r, grid) for r in (1, 2)] == [2, 5]
    resumed = FedXgbCyclic()
    resumed.restore_checkpoint_state(strategy.checkpoint_state())
    assert resumed.registered_nodes == {1: 1, 3: 2, 2: 3, 5: 4}


def test_cyclic_fractions_are_all_or_nothing() -> None:
    with pytest.raises(ValueError, match=r"fraction_train can only be 1\.0 or 0\.0"):
        FedXgbCyclic(fraction_train=0.5)
    with pytest.raises(ValueError, match=r"fraction_evaluate can only be 1\.0 or 0\.0"):
        FedXgbCyclic(fraction_evaluate=0.3)
    grid = InProcessGrid(ClientApp(), num_nodes=2)
    quiet = FedXgbCyclic(fraction_evaluate=0.0)
    assert list(quiet.configure_evaluate(1, EMPTY, ConfigRecord(), grid)) == []
    (message,) = quiet.configure_train(4, EMPTY, ConfigRecord({"lr": 0.1}), grid)
    assert message.metadata.dst_node_id == 2  # round 4 of nodes 1, 2: (4 - 1) % 2 = index 1
    assert message.content["config"] == {"lr": 0.1, "server-round": 4}
    assert message.metadata.message_type == MessageType.TRAIN
