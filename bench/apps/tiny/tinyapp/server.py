"""FedAvg over the tiny model; prints a timestamp at the end of every round.

Every reply must be usable (``min_usable_fraction=1.0``): one error reply fails the run, so a
benchmark never times rounds whose ClientApps failed."""

import time

import numpy as np

from corolla.app import Array, ArrayRecord, Context, MetricRecord
from corolla.serverapp import Grid, ServerApp
from corolla.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    params = int(context.run_config["num-params"])
    nodes = int(context.run_config["min-nodes"])
    count = int(context.run_config.get("num-arrays", 1))  # the parameters split evenly
    sizes = [params // count + (1 if i < params % count else 0) for i in range(count)]
    # Random, so that no two arrays share an object id (zeros would travel once, deduplicated).
    rng = np.random.default_rng(0)
    initial = [
        ArrayRecord(
            {str(i): Array(rng.random(size, dtype=np.float32)) for i, size in enumerate(sizes)}
        )
    ]
    start = time.perf_counter()
    print(f"bench-start {start:.6f}", flush=True)

    def mark(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        print(f"bench-round {server_round} {time.perf_counter():.6f}", flush=True)
        return None

    strategy = FedAvg(
        min_train_nodes=nodes,
        min_evaluate_nodes=nodes,
        min_available_nodes=nodes,
        min_usable_fraction=1.0,
    )
    strategy.start(
        grid=grid,
        initial_arrays=initial.pop(),  # the strategy's alone: freed once round 1 replaces it
        num_rounds=int(context.run_config["num-server-rounds"]),
        timeout=float(context.run_config["round-timeout"]),
        evaluate_fn=mark,
    )
