"""A ClientApp that does almost no compute, so a round's time is the platform's overhead."""

import numpy as np

from corolla.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    # A step of its own per node, so no two nodes reply the same arrays (same object ids);
    # one array at a time, so the app itself holds little besides the message and the reply.
    step = np.float32(0.01 + 1e-4 * (context.node_id % 1000))
    arrays = ArrayRecord()
    for key, array in msg.content["arrays"].items():
        values = array.numpy()
        values += step
        arrays[key] = Array(values)
    metrics = MetricRecord({"num-examples": 10, "train-loss": float(step)})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    metrics = MetricRecord({"num-examples": 10, "loss": 0.5})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
