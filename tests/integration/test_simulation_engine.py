"""`run_simulation` end to end: FedAvg over 20 virtual SuperNodes training on sklearn's digits.

The ClientApp and ServerApp live in this module: the simulation's worker processes import it
(``test_simulation_engine``, on ``sys.path`` as pytest put it there) to reach the handlers.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from corolla.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.common.errors import RoundFailed
from corolla.serverapp import Grid, ServerApp
from corolla.serverapp.strategy import FedAvg
from corolla.simulation import run_simulation

pytestmark = pytest.mark.timeout(180)

NODES = 20
CLASSES = 10
Arrays = npt.NDArray[Any]

# -- the app, as a user would write it ---------------------------------------------------------


@functools.cache
def digits() -> tuple[Arrays, Arrays, Arrays, Arrays]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    split = 1400
    return x[:split], y[:split], x[split:], y[split:]


def partition(data: Arrays, context: Context) -> Arrays:
    pid, count = (
        int(context.node_config["partition-id"]),
        int(context.node_config["num-partitions"]),
    )
    return data[pid::count]


def loss_and_accuracy(w: Arrays, b: Arrays, x: Arrays, y: Arrays) -> tuple[float, float]:
    logits = x @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    return loss, float((p.argmax(axis=1) == y).mean())


client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    w, b = (a.copy() for a in msg.content["arrays"].to_numpy_ndarrays())
    x_all, y_all, _, _ = digits()
    x, y = partition(x_all, context), partition(y_all, context)
    lr = float(context.run_config["lr"])
    onehot = np.eye(CLASSES)[y]
    for _ in range(int(msg.content["config"]["epochs"])):
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - onehot) / len(y)
        w -= lr * x.T @ grad
        b -= lr * grad.sum(axis=0)
    rounds = context.state.get("rounds", MetricRecord({"n": 0}))
    rounds["n"] = int(rounds["n"]) + 1
    context.state["rounds"] = rounds
    loss, _ = loss_and_accuracy(w, b, x, y)
    metrics = MetricRecord({"train-loss": loss, "rounds": rounds["n"], "num-examples": len(y)})
    return Message(RecordDict({"arrays": ArrayRecord([w, b]), "metrics": metrics}), reply_to=msg)


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    w, b = msg.content["arrays"].to_numpy_ndarrays()
    _, _, x_all, y_all = digits()
    x, y = partition(x_all, context), partition(y_all, context)
    loss, accuracy = loss_and_accuracy(w, b, x, y)
    metrics = MetricRecord({"loss": loss, "accuracy": accuracy, "num-examples": len(y)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    strategy = FedAvg(min_available_nodes=len(grid.get_node_ids()))

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        _, _, x, y = digits()
        w, b = arrays.to_numpy_ndarrays()
        loss, accuracy = loss_and_accuracy(w, b, x, y)
        return MetricRecord({"loss": loss, "accuracy": accuracy})

    initial = ArrayRecord([np.zeros((64, CLASSES)), np.zeros(CLASSES)])
    result = strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=int(context.run_config["rounds"]),
        timeout=60,
        train_config=ConfigRecord({"epochs": 20}),
        evaluate_fn=central,
    )
    context.state["arrays"] = result.arrays
    last = max(result.evaluate_metrics_serverapp)
    context.state["central"] = result.evaluate_metrics_serverapp[last]
    context.state["federated"] = result.evaluate_metrics_clientapp[last]
    context.state["train"] = result.train_metrics_clientapp[last]


failing = ClientApp()


@failing.train()
def train_fails(msg: Message, context: Context) -> Message:
    raise RuntimeError(f"no data on node {context.node_id}")


# -- the tests ---------------------------------------------------------------------------------


def child_pids() -> set[int]:
    """This process's children but multiprocessing's resource tracker (it ends with us)."""
    me, found = os.getpid(), set()
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            tracker = b"multiprocessing.resource_tracker" in (proc / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me and not tracker:
            found.add(int(proc.name))
    return found


def test_run_simulation_trains_fedavg_over_twenty_virtual_supernodes() -> None:
    before = child_pids()
    context = run_simulation(
        server,
        client,
        NODES,
        "local",  # Flower's order: backend_name, then backend_config
        {"client-resources": {"num-cpus": 1, "num-gpus": 0}},
        run_config={"lr": 1.0, "rounds": 3},
    )
    assert child_pids() - before == set(), "a worker process outlived the simulation"
    assert context.node_id == 0 and context.run_config == {"lr": 1.0, "rounds": 3}
    w, b = context.state["arrays"].to_numpy_ndarrays()
    assert w.shape == (64, CLASSES) and b.shape == (CLASSES,)
    assert np.abs(w).sum() > 0
    # The run_simulation result is the model the nodes trained: check it independently.
    _, _, x, y = digits()
    loss, accuracy = loss_and_accuracy(w, b, x, y)
    assert accuracy > 0.85, accuracy
    assert context.state["central"]["loss"] == pytest.approx(loss)
    assert context.state["central"]["accuracy"] == pytest.approx(accuracy)
    assert context.state["federated"]["accuracy"] > 0.85
    assert context.state["federated"]["num-examples"] == len(y)
    # Each node's context kept its state across rounds: every node counted 3 rounds.
    assert context.state["train"]["rounds"] == pytest.approx(3.0)


def test_a_failing_run_raises_the_serverapp_error_and_leaves_no_worker() -> None:
    before = child_pids()
    with pytest.raises(RoundFailed, match=r"round 1 train: 0 of 4 replies usable.*no data on node"):
        run_simulation(server, failing, 4, run_config={"lr": 1.0, "rounds": 1})
    assert child_pids() - before == set()
