"""ClientApps for the simulation tests, in a module the backend's worker processes can import.

`app` counts the messages each node handled (``context.state["counter"]``) and answers with
what it knows of its node; its message config steers it: ``raise`` (a handler error),
``sleep`` (seconds), ``pid-file`` (write the worker's pid there, then sleep). `fedavg_app`
trains deterministically (a node-and-round-seeded step) for comparing grids.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from corolla.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp

app = ClientApp()


def _count(context: Context) -> int:
    record = context.state.get("counter")
    n = int(record["n"]) + 1 if isinstance(record, ConfigRecord) else 1
    context.state["counter"] = ConfigRecord({"n": n})
    return n


def _obey(msg: Message) -> None:
    config = msg.content.get("config")
    if not isinstance(config, ConfigRecord):
        return
    if config.get("raise"):
        raise ValueError(f"asked to fail on node {msg.metadata.dst_node_id}")
    pid_file = config.get("pid-file")
    if isinstance(pid_file, str):
        partial = Path(pid_file + ".part")
        partial.write_text(str(os.getpid()))
        partial.rename(pid_file)
    seconds = config.get("sleep")
    if isinstance(seconds, (int, float)):
        time.sleep(seconds)


def _answer(msg: Message, context: Context) -> Message:
    _obey(msg)
    n = _count(context)
    metrics = MetricRecord(
        {
            "n": n,
            "node-id": context.node_id,
            "partition-id": int(context.node_config["partition-id"]),
            "num-partitions": int(context.node_config["num-partitions"]),
            "num-examples": 1,
        }
    )
    content = RecordDict({"metrics": metrics})
    arrays = msg.content.get("arrays")
    if isinstance(arrays, ArrayRecord):
        content["arrays"] = ArrayRecord(
            {key: array.numpy() + context.node_id for key, array in arrays.items()}
        )
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return _answer(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _answer(msg, context)


@app.query()
def query(msg: Message, context: Context) -> Message:
    return _answer(msg, context)


fedavg_app = ClientApp()


@fedavg_app.train()
def fedavg_train(msg: Message, context: Context) -> Message:
    server_round = int(msg.content["config"]["server-round"])
    rng = np.random.default_rng(1000 * server_round + context.node_id)
    arrays = {
        key: array.numpy() + rng.normal(size=array.shape).astype(array.numpy().dtype)
        for key, array in msg.content["arrays"].items()
    }
    metrics = MetricRecord({"loss": float(rng.random()), "num-examples": context.node_id})
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics}), reply_to=msg)


@fedavg_app.evaluate()
def fedavg_evaluate(msg: Message, context: Context) -> Message:
    total = sum(float(a.numpy().sum()) for a in msg.content["arrays"].values())
    metrics = MetricRecord({"score": total / context.node_id, "num-examples": 10})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def child_pids() -> set[int]:
    """Process ids whose parent is this process (from /proc: Linux), but multiprocessing's
    resource tracker: one per process that starts ``spawn`` children, it ends with this
    process and is no worker."""
    me, found = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me and not _is_resource_tracker(entry):
            found.add(int(entry.name))
    return found


def _is_resource_tracker(proc: Path) -> bool:
    try:
        return b"multiprocessing.resource_tracker" in (proc / "cmdline").read_bytes()
    except OSError:
        return False
