"""ServerApp of simapp: seeded FedAvg-style rounds on every node, printing each reply (partition
and calls, or the error code and the reason's last line) and a checksum of the final model."""

import hashlib
import time

import numpy as np

from corolla.app import ArrayRecord, Context, Message, RecordDict
from corolla.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    print(f"simapp run={grid.run.run_id} fab={grid.run.fab_hash}", flush=True)
    nodes = wait_for_nodes(grid, int(config["num-nodes"]))
    model = np.random.default_rng(int(config["seed"])).normal(size=int(config["dim"]))
    for server_round in range(1, int(config["num-server-rounds"]) + 1):
        content = RecordDict({"arrays": ArrayRecord([model])})
        messages = [Message(content, node, "train") for node in nodes]
        replies = grid.send_and_receive(messages, timeout=60)
        good = []
        for reply in replies:
            if reply.has_error():
                reason = reply.error.reason.strip().splitlines()[-1]
                print(f"simapp round={server_round} error code={reply.error.code} {reason}")
                continue
            metrics = reply.content["metrics"]
            partition, calls = int(metrics["partition"]), int(metrics["calls"])
            print(f"simapp round={server_round} partition={partition} calls={calls}")
            (array,) = reply.content["arrays"].to_numpy_ndarrays()
            good.append((partition, float(metrics["num-examples"]), array))
        if not good:
            reasons = sorted({outline(r.error.reason) for r in replies})
            raise RuntimeError(f"round {server_round}: no usable replies: {'; '.join(reasons)}")
        good.sort(key=lambda item: item[0])  # the same order of sums wherever it runs
        total = sum(weight for _, weight, _ in good)
        model = sum(weight * array for _, weight, array in good) / total
    checksum = hashlib.sha256(np.ascontiguousarray(model, dtype="<f8").tobytes()).hexdigest()
    print(f"simapp checksum={checksum}", flush=True)


def wait_for_nodes(grid: Grid, wanted: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < wanted:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} of {wanted} nodes after {timeout:.0f} s")
        time.sleep(0.1)
    return nodes


def outline(reason: str) -> str:
    """The first and the last line of an error reason (its headline and the exception)."""
    lines = reason.strip().splitlines()
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
