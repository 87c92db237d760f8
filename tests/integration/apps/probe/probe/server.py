"""ServerApp of the probe app: FedAvg on a 10-parameter model, printing what happened."""

import os

import numpy as np

from corolla.app import ArrayRecord, Context
from corolla.serverapp import Grid, ServerApp
from corolla.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    print(f"probe marker={config['marker']}", flush=True)
    print(f"probe server pid={os.getpid()}", flush=True)
    if config.get("env-names"):
        print(f"probe server env-names={','.join(sorted(os.environ))}", flush=True)
    if config["server-raise"]:
        raise ValueError("probe ServerApp failure on purpose")
    nodes = int(config["min-nodes"])
    strategy = FedAvg(min_train_nodes=nodes, min_evaluate_nodes=nodes, min_available_nodes=nodes)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([np.zeros(int(config["params"]))]),
        num_rounds=int(config["num-server-rounds"]),
        timeout=60,
        checkpoint=bool(config["checkpoint"]),
    )
    final = result.arrays.to_numpy_ndarrays()[0]
    print(
        f"probe final={final[0]:.1f} size={final.size} all-equal={bool((final == final[0]).all())}",
        flush=True,
    )
    for server_round, metrics in sorted(result.train_metrics_clientapp.items()):
        print(f"probe round={server_round} calls={metrics.get('calls')}", flush=True)
