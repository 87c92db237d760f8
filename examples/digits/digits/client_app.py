"""The ClientApp: trains and evaluates the MLP on this node's shard of the data."""

from __future__ import annotations

from corolla.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from digits import task

app = ClientApp()


def _partition(context: Context) -> task.Split:
    partition_id = int(context.node_config.get("partition-id", 0))
    num_partitions = int(context.node_config.get("num-partitions", 1))
    return task.load_partition(partition_id, num_partitions)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train on the local shard, starting from the arrays the server sent."""
    x_train, y_train, _, _ = _partition(context)
    config = msg.content["config"]
    weights = task.train(
        msg.content["arrays"].to_numpy_ndarrays(),
        x_train,
        y_train,
        epochs=int(context.run_config["local-epochs"]),
        lr=float(config["lr"]),
        seed=int(config["server-round"]) * 1000 + context.node_id,
    )
    loss, _ = task.evaluate(weights, x_train, y_train)
    metrics = MetricRecord({"train-loss": loss, "num-examples": len(x_train)})
    return Message(RecordDict({"arrays": ArrayRecord(weights), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the server's arrays on the local test portion of this node's shard."""
    _, _, x_test, y_test = _partition(context)
    loss, accuracy = task.evaluate(msg.content["arrays"].to_numpy_ndarrays(), x_test, y_test)
    metrics = MetricRecord({"loss": loss, "accuracy": accuracy, "num-examples": len(x_test)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
