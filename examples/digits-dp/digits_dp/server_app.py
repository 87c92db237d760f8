"""The ServerApp: FedAdam over the nodes' privatised updates, evaluated centrally on the
held-out test split."""

from __future__ import annotations

import math

from corolla.app import ArrayRecord, ConfigRecord, Context, MetricRecord, UserConfig
from corolla.serverapp import (
    GaussianPrivacyEvent,
    Grid,
    NeighboringRelation,
    PrivacyConfig,
    RdpAccountant,
    SamplingMethod,
    ServerApp,
)
from corolla.serverapp.strategy import FedAdam
from digits_dp import task

app = ServerApp()


def privacy_of_run(config: UserConfig) -> float:
    """Epsilon (at the run's delta) of all of one node's train replies together, if it takes
    part in every round: the replies compose, and Renyi-DP accounting adds them up.

    Each reply gets noise of standard deviation ``sensitivity * sqrt(2 ln(1.25 / delta)) /
    epsilon`` (what `LocalDpMod` adds), so its noise multiplier, the standard deviation over
    the sensitivity, is ``sqrt(2 ln(1.25 / delta)) / epsilon``.
    """
    epsilon, delta = float(config["epsilon"]), float(config["delta"])
    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=delta,
            population_size=1,  # local DP: each node is accounted on its own
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    noise_multiplier = math.sqrt(2 * math.log(1.25 / delta)) / epsilon
    event = GaussianPrivacyEvent(
        noise_multiplier=noise_multiplier, sample_size=1, population_size=1
    )
    accountant.compose(event, count=int(config["num-server-rounds"]))
    return accountant.get_epsilon(delta)


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    num_rounds = int(config["num-server-rounds"])
    min_nodes = int(config["min-nodes"])
    client_lr = float(config["learning-rate"])
    x_test, y_test = task.load_test_split()
    print(
        f"local DP: each train reply is ({config['epsilon']}, {config['delta']})-DP "
        f"(clipping norm {config['clipping-norm']}, sensitivity {config['sensitivity']}); "
        f"a node's {num_rounds} replies together: epsilon {privacy_of_run(config):.1f}",
        flush=True,
    )

    def central_eval(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        loss, accuracy = task.evaluate(arrays.to_numpy_ndarrays(), x_test, y_test)
        print(
            f"round {server_round}/{num_rounds}: centralised accuracy {accuracy:.3f}, "
            f"loss {loss:.2f}",
            flush=True,
        )
        return MetricRecord({"accuracy": accuracy, "loss": loss})

    # fraction_evaluate=0: the nodes evaluate nothing, so all they send is their noised update.
    strategy = FedAdam(
        fraction_train=float(config["fraction-train"]),
        fraction_evaluate=0.0,
        min_train_nodes=min_nodes,
        min_available_nodes=min_nodes,
        eta=float(config["server-learning-rate"]),
        eta_l=client_lr,
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(task.init_weights()),
        num_rounds=num_rounds,
        train_config=ConfigRecord({"lr": client_lr}),
        evaluate_fn=central_eval,
    )
    final = result.evaluate_metrics_serverapp[num_rounds]
    print(f"final centralised accuracy: {final['accuracy']:.3f}", flush=True)
