"""ServerApp of compat-strategies: each strategy runs from the arrays [0, 0] against the
ClientApp's fixed updates, and its result is checked against the value worked out by hand.

Updates (partition: update, examples): 0: (1, 0), 10; 1: (2, 3), 20; 2: (9, -3), 30.
"""

import contextlib
import logging
from collections.abc import Iterable, Iterator
from logging import INFO

import numpy as np

from corolla.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from corolla.common import log
from corolla.serverapp import Grid, ServerApp
from corolla.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    Krum,
    MultiKrum,
    Result,
    Strategy,
)

app = ServerApp()

# The examples-weighted mean update: (10*(1, 0) + 20*(2, 3) + 30*(9, -3)) / 60 = (16/3, -1/2).
MEAN_UPDATE = np.array([16 / 3, -1 / 2])


class CountingFedAvg(FedAvg):
    """A FedAvg subclass as Flower users write them: a learning rate per round in the train
    config, and an aggregation that counts and inspects the replies before averaging."""

    def __init__(self, nodes: int) -> None:
        super().__init__(min_train_nodes=nodes, min_evaluate_nodes=nodes, min_available_nodes=nodes)
        self.counts: list[int] = []
        self.partitions: list[list[int]] = []

    def summary(self) -> None:
        super().summary()
        log(INFO, "CountingFedAvg: counts the replies of each round")

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config["lr"] = 0.01 * server_round
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self.counts.append(len(replies))  # type: ignore[arg-type]  # Flower passes a list
        self.partitions.append(sorted(int(r.content["metrics"]["partition"]) for r in replies))
        lrs = {float(r.content["metrics"]["lr"]) for r in replies}  # a second pass
        assert lrs == {0.01 * server_round}, lrs
        return super().aggregate_train(server_round, replies)  # and a third


@contextlib.contextmanager
def captured_log() -> Iterator[list[str]]:
    """The messages logged through ``log``'s logger (at any level) inside the block."""
    logger: logging.Logger = log.__self__  # type: ignore[attr-defined]
    lines: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def run(strategy: Strategy, grid: Grid, start: tuple[float, float] = (0.0, 0.0)) -> Result:
    with captured_log() as lines:
        strategy.summary()
    assert lines, f"{type(strategy).__name__}.summary() logged nothing"
    return strategy.start(grid=grid, initial_arrays=ArrayRecord([np.array(start)]), num_rounds=1)


def arrays_of(result: Result) -> np.ndarray:
    (x,) = result.arrays.to_numpy_ndarrays()
    return x


def expect(name: str, got: np.ndarray, expected: np.ndarray) -> None:
    assert np.allclose(got, expected, rtol=1e-9, atol=1e-12), f"{name}: {got} != {expected}"


@app.main()
def main(grid: Grid, context: Context) -> None:
    nodes = int(context.run_config["num-nodes"])
    sizes = {"min_train_nodes": nodes, "min_available_nodes": nodes}

    counting = CountingFedAvg(nodes)
    with captured_log() as lines:
        counting.summary()
    assert "CountingFedAvg: counts the replies of each round" in lines, lines
    assert len(lines) > 1, "FedAvg.summary() logged nothing"
    result = counting.start(grid, ArrayRecord([np.zeros(2)]), 2)
    assert counting.counts == [nodes, nodes], counting.counts
    assert counting.partitions == [list(range(nodes))] * 2, counting.partitions
    expect("CountingFedAvg", arrays_of(result), 2 * MEAN_UPDATE)  # two rounds: (32/3, -1)
    # Evaluation after round 2 at x = (32/3, -1): the examples-weighted mean of |x - update|^2.
    x = 2 * MEAN_UPDATE
    updates = {0: (1.0, 0.0), 1: (2.0, 3.0), 2: (9.0, -3.0)}
    loss = sum(10 * (p + 1) * np.sum((x - np.array(u)) ** 2) for p, u in updates.items()) / 60
    evaluated = result.evaluate_metrics_clientapp[2]["loss"]
    assert np.isclose(evaluated, loss, rtol=1e-9), (evaluated, loss)

    prox = FedProx(fraction_evaluate=0.0, proximal_mu=0.5, **sizes)
    result = run(prox, grid)
    expect("FedProx", arrays_of(result), MEAN_UPDATE)
    mu = result.train_metrics_clientapp[1]["proximal-mu"]
    assert mu == 0.5, f"the clients saw proximal-mu {mu}"

    eta, beta_1, beta_2, tau = 0.1, 0.9, 0.99, 1e-3
    adam = FedAdam(fraction_evaluate=0.0, eta=eta, beta_1=beta_1, beta_2=beta_2, tau=tau, **sizes)
    result = run(adam, grid)
    # Adam on the pseudo-gradient (Reddi et al., 2021, Adaptive Federated Optimization), from
    # zero moments: m = (1 - beta_1) d, v = (1 - beta_2) d^2, with Flower's bias-corrected step
    # eta * sqrt(1 - beta_2^t) / (1 - beta_1^t), t = server_round + 1 = 2.
    delta = MEAN_UPDATE
    m, v = (1 - beta_1) * delta, (1 - beta_2) * delta**2
    step = eta * np.sqrt(1 - beta_2**2) / (1 - beta_1**2)
    expect("FedAdam", arrays_of(result), step * m / (np.sqrt(v) + tau))

    # The coordinate-wise median of (1, 0), (2, 3), (9, -3), unweighted.
    result = run(FedMedian(fraction_evaluate=0.0, **sizes), grid)
    expect("FedMedian", arrays_of(result), np.array([2.0, 0.0]))

    # Squared distances: |u0 - u1|^2 = 10, |u0 - u2|^2 = 73, |u1 - u2|^2 = 85. With 3 replies
    # and no malicious node, each score sums the 3 - 0 - 2 = 1 smallest: 10, 10, 73.
    result = run(Krum(fraction_evaluate=0.0, num_malicious_nodes=0, **sizes), grid)
    chosen = arrays_of(result)
    assert any(np.allclose(chosen, u) for u in ([1.0, 0.0], [2.0, 3.0])), f"Krum chose {chosen}"
    multi = MultiKrum(fraction_evaluate=0.0, num_malicious_nodes=0, num_nodes_to_select=2, **sizes)
    result = run(multi, grid)
    # The two best (10, 10) averaged by examples: (10*(1, 0) + 20*(2, 3)) / 30 = (5/3, 2).
    expect("MultiKrum", arrays_of(result), np.array([5 / 3, 2.0]))

    # Another start() of the same strategy in the same run (right after the first: the last
    # checkpoint is of MultiKrum, 1 round) trains afresh from its own arrays, as in Flower.
    result = run(multi, grid, start=(10.0, 10.0))
    expect("MultiKrum again", arrays_of(result), np.array([10 + 5 / 3, 12.0]))

    print("compat-strategies: PASS FedAvg-subclass FedProx FedAdam FedMedian Krum MultiKrum")
