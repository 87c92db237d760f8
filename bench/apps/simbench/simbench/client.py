"""A ClientApp that does almost no compute, so a round's time is the platform's overhead."""

import numpy as np

from corolla.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    arrays = [a + 0.01 for a in msg.content["arrays"].to_numpy_ndarrays()]
    metrics = MetricRecord({"num-examples": 10, "train-loss": float(np.abs(arrays[0]).mean())})
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    metrics = MetricRecord({"num-examples": 10, "loss": 0.5})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
