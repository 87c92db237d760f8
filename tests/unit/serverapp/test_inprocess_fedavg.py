"""A Message-API app (import root aside) runs a FedAvg loop over 3 ClientApps in-process."""

from __future__ import annotations

import numpy as np
import pytest

from corolla.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from corolla.clientapp import ClientApp
from corolla.serverapp import Grid, ServerApp
from corolla.simulation import InProcessGrid

# -- user code, as written for the Message API -------------------------------------------------

TRUE_W = np.array([2.0, -3.0, 0.5])
client = ClientApp()


def _local_data(node_id: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(node_id)
    x = rng.normal(size=(40 + 10 * node_id, 3))
    return x, x @ TRUE_W + rng.normal(scale=0.01, size=len(x))


@client.train()
def train(msg: Message, context: Context) -> Message:
    w = msg.content["arrays"].to_numpy_ndarrays()[0].copy()
    lr = float(msg.content["config"]["lr"])
    x, y = _local_data(context.node_id)
    for _ in range(20):
        w -= lr * 2 * x.T @ (x @ w - y) / len(x)
    rounds = context.state.get("rounds", MetricRecord({"n": 0}))
    context.state["rounds"] = MetricRecord({"n": int(rounds["n"]) + 1})
    content = RecordDict(
        {
            "arrays": ArrayRecord([w]),
            "metrics": MetricRecord({"num-examples": len(x)}),
        }
    )
    return Message(content, reply_to=msg)


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    w = msg.content["arrays"].to_numpy_ndarrays()[0]
    x, y = _local_data(context.node_id)
    mse = float(np.mean((x @ w - y) ** 2))
    metrics = MetricRecord({"mse": mse, "num-examples": len(x)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


server = ServerApp()
history: list[float] = []


@server.main()
def main(grid: Grid, context: Context) -> None:
    weights = np.zeros(3)
    for server_round in range(int(context.run_config["num-rounds"])):
        nodes = grid.get_node_ids()
        messages = [
            Message(
                RecordDict(
                    {
                        "arrays": ArrayRecord([weights]),
                        "config": ConfigRecord({"lr": 0.05}),
                    }
                ),
                dst_node_id=node,
                message_type=MessageType.TRAIN,
                group_id=str(server_round),
            )
            for node in nodes
        ]
        replies = grid.send_and_receive(messages, timeout=10)
        assert all(r.has_content() for r in replies)
        counts = np.array([r.content["metrics"]["num-examples"] for r in replies], dtype=float)
        stacked = np.stack([r.content["arrays"].to_numpy_ndarrays()[0] for r in replies])
        weights = (stacked * counts[:, None]).sum(axis=0) / counts.sum()
        evals = grid.send_and_receive(
            [
                Message(
                    RecordDict({"arrays": ArrayRecord([weights])}),
                    dst_node_id=node,
                    message_type=MessageType.EVALUATE,
                )
                for node in nodes
            ],
            timeout=10,
        )
        history.append(float(np.mean([r.content["metrics"]["mse"] for r in evals])))
    context.state["final"] = ArrayRecord([weights])


# -- the test ------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_fedavg_loop_over_three_clientapps_converges() -> None:
    history.clear()
    grid = InProcessGrid(client, num_nodes=3, run_config={"num-rounds": 5})
    context = Context(run_id=grid.run_id, node_id=0, run_config={"num-rounds": 5})
    server(grid, context)

    final = context.state["final"]
    assert isinstance(final, ArrayRecord)
    np.testing.assert_allclose(final.to_numpy_ndarrays()[0], TRUE_W, atol=0.05)
    assert len(history) == 5
    assert history[-1] < history[0] / 10
    # ClientApp state persisted across the run's messages on every node.
    for node_id in grid.get_node_ids():
        assert grid.context(node_id).state["rounds"]["n"] == 5


def test_unknown_message_type_gets_error_reply_not_crash() -> None:
    grid = InProcessGrid(client, num_nodes=1)
    msg = Message(RecordDict(), dst_node_id=1, message_type="query.unknown")
    (reply,) = grid.send_and_receive([msg], timeout=5)
    assert reply.has_error()
    assert "query.unknown" in (reply.error.reason or "")
    assert reply.metadata.reply_to_message_id == msg.metadata.message_id
    assert reply.metadata.run_id == grid.run_id
