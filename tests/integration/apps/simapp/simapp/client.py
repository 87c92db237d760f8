"""ClientApp of simapp: a seeded local step that depends on the partition, never the node id;
a counter in ``context.state`` reported as the metric ``calls``."""

import time

import numpy as np

from corolla.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    config = context.run_config
    if partition == int(config["raise-partition"]):
        raise RuntimeError(f"simapp ClientApp failure on purpose (partition {partition})")
    time.sleep(float(config["round-sleep"]))
    count = context.state.get("count", MetricRecord({"n": 0}))
    calls = int(count["n"]) + 1
    context.state["count"] = MetricRecord({"n": calls})
    (model,) = msg.content["arrays"].to_numpy_ndarrays()
    rng = np.random.default_rng([int(config["seed"]), partition, calls])
    updated = model + 0.1 * rng.normal(size=model.shape)
    metrics = MetricRecord({"num-examples": 10 + partition, "partition": partition, "calls": calls})
    return Message(RecordDict({"arrays": ArrayRecord([updated]), "metrics": metrics}), reply_to=msg)
