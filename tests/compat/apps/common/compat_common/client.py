"""ClientApp of compat-common: imports what Flower apps take from ``flwr.common`` (records
re-exported there, ``log``, the typing aliases, the Parameters conversions) and uses them the
way older Flower code does: the model travels as serialized ``Parameters`` in a ConfigRecord."""

from logging import INFO

import numpy as np

from corolla.clientapp import ClientApp
from corolla.common import (
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
    log,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from corolla.common.config import unflatten_dict
from corolla.common.typing import Config, Metrics, NDArrays, Parameters, Scalar, UserConfig

app = ClientApp()


# Annotations are evaluated when the function is defined: every alias must exist.
def local_update(weights: NDArrays, config: Config, node_config: UserConfig) -> NDArrays:
    """``steps`` gradient steps of size ``lr`` on ``0.5 * |w - target|^2``, the partition's
    target being ``partition-id + 1`` everywhere."""
    target = float(node_config["partition-id"]) + 1.0
    lr: Scalar = config["lr"]
    (w,) = weights
    for _ in range(int(config["steps"])):
        w = w - float(lr) * (w - target)
    return [w]


def to_record(parameters: Parameters) -> ConfigRecord:
    return ConfigRecord({"tensors": parameters.tensors, "tensor-type": parameters.tensor_type})


def from_record(record: ConfigRecord) -> Parameters:
    return Parameters(tensors=list(record["tensors"]), tensor_type=str(record["tensor-type"]))


@app.train()
def train(msg: Message, context: Context) -> Message:
    settings = unflatten_dict(context.run_config)
    train_config: Config = settings["train"]
    weights = parameters_to_ndarrays(from_record(msg.content["parameters"]))
    assert [w.shape for w in weights] == [(int(settings["model"]["size"]),)]
    updated = local_update(weights, train_config, context.node_config)
    partition = int(context.node_config["partition-id"])
    log(INFO, "compat-common client: partition %d trained", partition)
    metrics: Metrics = {"num-examples": 10 * (partition + 1), "partition": partition}
    content = RecordDict(
        {
            "parameters": to_record(ndarrays_to_parameters(updated)),
            "metrics": MetricRecord(metrics),
        }
    )
    assert np.all(np.isfinite(updated[0]))
    return Message(content, reply_to=msg)
