"""ServerApp of compat-records: FedAvg over an MLP with a 0-d parameter; every expectation about
the records it gets back is checked here, and a broken one fails the run."""

import numpy as np

from corolla.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from corolla.serverapp import Grid, ServerApp
from corolla.serverapp.strategy import FedAvg

app = ServerApp()

HIDDEN = 4


def weighted_mean_and_count(contents: list[RecordDict], weighting_key: str) -> MetricRecord:
    """A Flower-style metrics aggregation: each metric's weighted mean, plus ``replies`` (how
    many replies were aggregated), so that a failed ClientApp cannot go unnoticed."""
    records = [next(iter(content.metric_records.values())) for content in contents]
    total = sum(float(record[weighting_key]) for record in records)
    out: dict[str, float] = {"replies": len(records)}
    for key in records[0]:
        if key != weighting_key:
            out[key] = sum(float(r[key]) * float(r[weighting_key]) for r in records) / total
    return MetricRecord(metric_dict=out)


def initial_model() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [
        rng.normal(scale=0.5, size=(4, HIDDEN)),
        rng.normal(scale=0.5, size=(HIDDEN, 1)),
        np.zeros(HIDDEN),
        np.zeros(1),
        np.array(1.0, dtype=np.float32),  # a 0-d parameter ("temperature")
    ]


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    nodes, rounds = int(config["num-nodes"]), int(config["num-server-rounds"])

    initial = initial_model()
    arrays = ArrayRecord(numpy_ndarrays=initial, keep_input=False)
    assert initial == [], "ArrayRecord(numpy_ndarrays=..., keep_input=False) kept its input"
    settings = {
        "learning-rate": float(config["learning-rate"]),
        "local-epochs": int(config["local-epochs"]),
    }
    train_config = ConfigRecord(config_dict=settings, keep_input=False)
    assert settings == {}, "ConfigRecord(config_dict=..., keep_input=False) kept its input"

    strategy = FedAvg(
        min_train_nodes=nodes,
        min_evaluate_nodes=nodes,
        min_available_nodes=nodes,
        train_metrics_aggr_fn=weighted_mean_and_count,
        evaluate_metrics_aggr_fn=weighted_mean_and_count,
    )
    result = strategy.start(grid, arrays, rounds, 60, train_config)

    for server_round in range(1, rounds + 1):
        for phase in (result.train_metrics_clientapp, result.evaluate_metrics_clientapp):
            replies = phase[server_round]["replies"]
            assert replies == nodes, f"round {server_round}: {replies} of {nodes} replies"

    final = result.arrays.to_numpy_ndarrays()
    shapes = [a.shape for a in final]
    assert shapes == [(4, HIDDEN), (HIDDEN, 1), (HIDDEN,), (1,), ()], shapes
    # Each round, partition p adds p + 1 to the temperature; FedAvg weighs partition p by its
    # 40 + 10 p examples: (40*1 + 50*2 + 60*3) / (40 + 50 + 60) = 320 / 150 per round.
    temperature = final[4]
    expected = 1.0 + rounds * 320 / 150  # 3 rounds: 7.4
    assert temperature.dtype == np.float32, temperature.dtype
    assert np.isclose(float(temperature), expected, rtol=1e-6), (float(temperature), expected)
    evaluated = result.evaluate_metrics_clientapp[rounds]
    # Evaluation ran on the aggregated model: every node saw this round's temperature.
    assert np.isclose(evaluated["temperature"], expected, rtol=1e-6), evaluated

    # What the result hands out is writable and independent of it.
    temperature += 100
    assert np.isclose(float(result.arrays["4"].numpy()), expected, rtol=1e-6)

    accuracy = float(evaluated["accuracy"])
    assert accuracy >= 0.8, f"the federated MLP reached only {accuracy:.3f} accuracy"
    print(
        f"compat-records: PASS rounds={rounds} accuracy={accuracy:.3f} temperature={expected:.4f}",
        flush=True,
    )
