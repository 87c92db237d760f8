"""The ServerApp: federated averaging of the MLP, evaluated centrally on the held-out test split."""

from __future__ import annotations

from corolla.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from corolla.serverapp import Grid, ServerApp
from corolla.serverapp.strategy import FedAvg
from digits import task

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    num_rounds = int(config["num-server-rounds"])
    min_nodes = int(config["min-nodes"])
    x_test, y_test = task.load_test_split()

    def central_eval(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        loss, accuracy = task.evaluate(arrays.to_numpy_ndarrays(), x_test, y_test)
        print(
            f"round {server_round}/{num_rounds}: centralised accuracy {accuracy:.3f}, "
            f"loss {loss:.2f}",
            flush=True,
        )
        return MetricRecord({"accuracy": accuracy, "loss": loss})

    strategy = FedAvg(
        fraction_train=float(config["fraction-train"]),
        min_train_nodes=min_nodes,
        min_evaluate_nodes=min_nodes,
        min_available_nodes=min_nodes,
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(task.init_weights()),
        num_rounds=num_rounds,
        train_config=ConfigRecord({"lr": float(config["learning-rate"])}),
        evaluate_fn=central_eval,
    )
    final = result.evaluate_metrics_serverapp[num_rounds]
    print(f"final centralised accuracy: {final['accuracy']:.3f}", flush=True)
