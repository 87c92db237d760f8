"""FedAvg over every virtual node; every reply must be usable (else the run fails), and a
timestamp is printed at the end of every round."""

import time

import numpy as np

from corolla.app import ArrayRecord, Context, MetricRecord
from corolla.serverapp import Grid, ServerApp
from corolla.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    params = int(context.run_config["num-params"])
    nodes = len(grid.get_node_ids())
    fraction = float(context.run_config["fraction-train"])
    initial = ArrayRecord([np.zeros(params, dtype=np.float32)])
    print(f"bench-start {time.time():.6f} nodes {nodes}", flush=True)

    def mark(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        print(f"bench-round {server_round} {time.time():.6f}", flush=True)
        return None

    strategy = FedAvg(
        fraction_train=fraction,
        fraction_evaluate=fraction,
        min_train_nodes=1,
        min_evaluate_nodes=1,
        min_available_nodes=nodes,
        min_usable_fraction=1.0,  # a failed reply fails the run, and so the benchmark
    )
    strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=int(context.run_config["num-server-rounds"]),
        timeout=600,
        evaluate_fn=mark,
    )
    print(f"bench-done {time.time():.6f}", flush=True)
