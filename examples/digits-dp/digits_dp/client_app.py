"""The ClientApp: trains the model on this node's shard; `LocalDpMod` clips and noises the
update in every train reply before it leaves the node."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from corolla.app import ArrayRecord, Context, Message, MetricRecord, RecordDict, UserConfig
from corolla.clientapp import ClientApp
from corolla.clientapp.mod import LocalDpMod
from digits_dp import task


@lru_cache(maxsize=8)
def _local_dp_mod(
    clipping_norm: float, sensitivity: float, epsilon: float, delta: float
) -> LocalDpMod:
    return LocalDpMod(clipping_norm, sensitivity, epsilon, delta)


def local_dp_mod(run_config: UserConfig) -> LocalDpMod:
    """The `LocalDpMod` for the privacy parameters of ``run_config`` (one per parameter set,
    kept for the life of the process, so its noise generator keeps going)."""
    return _local_dp_mod(
        float(run_config["clipping-norm"]),
        float(run_config["sensitivity"]),
        float(run_config["epsilon"]),
        float(run_config["delta"]),
    )


def local_dp(
    msg: Message, context: Context, call_next: Callable[[Message, Context], Message]
) -> Message:
    """`LocalDpMod` with this run's privacy parameters: a mod object is built when the app is
    imported, before any run config is known, so this one looks it up per message."""
    return local_dp_mod(context.run_config)(msg, context, call_next)


app = ClientApp(mods=[local_dp])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train on the local shard, starting from the arrays the server sent.

    The reply holds the new arrays (which `LocalDpMod` turns into the arrays received plus a
    clipped and noised update) and ``num-examples``, the weight FedAdam averages with. Nothing
    else leaves the node: a training loss or a local evaluation would not be noised.
    """
    partition_id = int(context.node_config.get("partition-id", 0))
    num_partitions = int(context.node_config.get("num-partitions", 1))
    x_train, y_train = task.load_partition(partition_id, num_partitions)
    config = msg.content["config"]
    weights = task.train(
        msg.content["arrays"].to_numpy_ndarrays(),
        x_train,
        y_train,
        epochs=int(context.run_config["local-epochs"]),
        lr=float(config["lr"]),
        seed=int(config["server-round"]) * 1000 + context.node_id,
    )
    metrics = MetricRecord({"num-examples": len(x_train)})
    return Message(RecordDict({"arrays": ArrayRecord(weights), "metrics": metrics}), reply_to=msg)
