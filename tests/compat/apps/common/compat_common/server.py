"""ServerApp of compat-common: a hand-written weighted-averaging loop over serialized
``Parameters``, the run config read with ``unflatten_dict``, progress logged with ``log``."""

import logging
import time
import typing
from logging import INFO

import numpy as np

from corolla.app import Context, Message, MessageType, RecordDict
from corolla.common import log, ndarrays_to_parameters, parameters_to_ndarrays
from corolla.common.config import flatten_dict, unflatten_dict
from corolla.common.typing import NDArrays, Parameters
from corolla.serverapp import Grid, ServerApp

from . import client

app = ServerApp()


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def check_log() -> None:
    """``log`` is a logger's ``log`` method: ``log(level, format, *args)``."""
    logger = log.__self__  # type: ignore[attr-defined]
    assert isinstance(logger, logging.Logger), type(logger)
    handler, level = Captured(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        log(INFO, "compat-common: %s %d", "logging", 42)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert handler.lines == ["compat-common: logging 42"], handler.lines


def check_config(run_config: dict[str, typing.Any]) -> dict[str, typing.Any]:
    settings = unflatten_dict(run_config)
    assert settings["model"] == {"size": 6}, settings
    assert settings["train"] == {"lr": 0.5, "steps": 3}, settings
    assert flatten_dict(settings) == run_config, "flatten_dict does not undo unflatten_dict"
    return settings


def wait_for_nodes(grid: Grid, wanted: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < wanted:
        assert time.monotonic() < deadline, f"only {len(nodes)} of {wanted} nodes came"
        time.sleep(0.1)
    return nodes


@app.main()
def main(grid: Grid, context: Context) -> None:
    check_log()
    settings = check_config(context.run_config)
    hints = typing.get_type_hints(client.local_update)
    assert hints["weights"] == NDArrays and hints["return"] == NDArrays, hints

    nodes = wait_for_nodes(grid, int(settings["num-nodes"]))
    rounds = int(settings["num-server-rounds"])
    weights: NDArrays = [np.zeros(int(settings["model"]["size"]))]
    for server_round in range(1, rounds + 1):
        parameters = ndarrays_to_parameters(weights)
        assert isinstance(parameters, Parameters) and parameters.tensor_type == "numpy.ndarray"
        messages = [
            Message(
                RecordDict({"parameters": client.to_record(parameters)}),
                dst_node_id=node,
                message_type=MessageType.TRAIN,
                group_id=str(server_round),
            )
            for node in nodes
        ]
        replies = list(grid.send_and_receive(messages, timeout=60))
        errors = [r.error.reason for r in replies if r.has_error()]
        assert not errors and len(replies) == len(nodes), errors or len(replies)
        total = sum(float(r.content["metrics"]["num-examples"]) for r in replies)
        weights = [
            sum(
                float(r.content["metrics"]["num-examples"])
                * parameters_to_ndarrays(client.from_record(r.content["parameters"]))[0]
                for r in replies
            )
            / total
        ]
        log(INFO, "compat-common: round %d averaged %d replies", server_round, len(replies))

    # Partition p (weight 10 (p + 1)) moves w to p + 1 - (p + 1 - w) / 8 (3 steps of lr 0.5):
    # the weighted mean target is (10*1 + 20*2 + 30*3) / 60 = 7/3, so after R rounds from 0
    # every entry is 7/3 * (1 - (1/8)^R); 2 rounds: 7/3 * 63/64 = 2.296875.
    expected = 7 / 3 * (1 - 0.125**rounds)
    assert np.allclose(weights[0], expected, rtol=1e-12), (weights[0], expected)
    print(f"compat-common: PASS rounds={rounds} weights={expected:.6f}", flush=True)
