"""ClientApp of compat-strategies: a fixed update per partition, so that every strategy's result
can be worked out by hand; it reports what the strategy put in the train config."""

import numpy as np

from corolla.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp

app = ClientApp()

# Partition p adds UPDATES[p] to the arrays it receives and reports 10 (p + 1) examples.
UPDATES = {0: [1.0, 0.0], 1: [2.0, 3.0], 2: [9.0, -3.0]}


@app.train()
def train(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    (x,) = msg.content["arrays"].to_numpy_ndarrays()
    x += np.array(UPDATES[partition])
    config = msg.content["config"]
    metrics = MetricRecord(
        {
            "num-examples": 10 * (partition + 1),
            "partition": partition,
            "server-round": int(config["server-round"]),
            "lr": float(config.get("lr", -1.0)),
            "proximal-mu": float(config.get("proximal-mu", -1.0)),
        }
    )
    return Message(RecordDict({"arrays": ArrayRecord([x]), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    (x,) = msg.content["arrays"].to_numpy_ndarrays()
    loss = float(np.sum((x - np.array(UPDATES[partition])) ** 2))
    metrics = MetricRecord({"loss": loss, "num-examples": 10 * (partition + 1)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
