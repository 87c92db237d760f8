"""FedAvg over the tiny model; prints a timestamp at the end of every round."""

import time

import numpy as np

from corolla.app import ArrayRecord, Context, MetricRecord
from corolla.serverapp import Grid, ServerApp
from corolla.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    params = int(context.run_config["num-params"])
    nodes = int(context.run_config["min-nodes"])
    initial = ArrayRecord([np.zeros(params, dtype=np.float32)])
    start = time.perf_counter()
    print(f"bench-start {start:.6f}", flush=True)

    def mark(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        print(f"bench-round {server_round} {time.perf_counter():.6f}", flush=True)
        return None

    strategy = FedAvg(min_train_nodes=nodes, min_evaluate_nodes=nodes, min_available_nodes=nodes)
    strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=int(context.run_config["num-server-rounds"]),
        timeout=60,
        evaluate_fn=mark,
    )
