"""ClientApp of compat-dp: updates far larger than any clipping norm, all along the direction
``e = (1, ..., 1) / sqrt(DIM)``, so that clipping leaves exactly ``e`` and the rest is noise.

A mod of its own picks the DP mod: ``fixedclipping_mod`` when the server sends a clipping norm
(the client-side central-DP wrapper does), ``LocalDpMod`` otherwise.
"""

from collections.abc import Callable

import numpy as np

from corolla.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.clientapp.mod import LocalDpMod, fixedclipping_mod

DIM = 2000
LOCAL_DP = {"clipping_norm": 1.0, "sensitivity": 0.01, "epsilon": 0.5, "delta": 1e-5}

app = ClientApp()
local_dp = LocalDpMod(**LOCAL_DP)


def dp_mod(
    msg: Message, context: Context, call_next: Callable[[Message, Context], Message]
) -> Message:
    if "clipping_norm" in msg.content["config"]:
        return fixedclipping_mod(msg, context, call_next)
    return local_dp(msg, context, call_next)


@app.train(mods=[dp_mod])
def train(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    (x,) = msg.content["arrays"].to_numpy_ndarrays()
    x += 10.0 * (partition + 1) * np.ones(DIM) / np.sqrt(DIM)  # an update of norm 10 (p + 1)
    metrics = MetricRecord({"num-examples": 10 * (partition + 1)})
    return Message(RecordDict({"arrays": ArrayRecord([x]), "metrics": metrics}), reply_to=msg)
