"""A ServerApp whose ClientApps all raise ends with `RoundFailed`, the `AppError` the runtime
reports as the run's one-line failure reason."""

from __future__ import annotations

import numpy as np
import pytest

from corolla.app import ArrayRecord, Context, Message
from corolla.clientapp import ClientApp
from corolla.common.errors import AppError, RoundFailed
from corolla.serverapp import Grid, ServerApp
from corolla.serverapp.strategy import FedAvg
from corolla.simulation import InProcessGrid

pytestmark = pytest.mark.timeout(30)

client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    raise ValueError(f"bad shape on node {context.node_id}")


server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    FedAvg().start(grid=grid, initial_arrays=ArrayRecord([np.zeros(2)]), num_rounds=5)


def test_the_serverapp_fails_with_a_one_line_app_error() -> None:
    grid = InProcessGrid(client, num_nodes=2)
    with pytest.raises(AppError) as caught:
        server(grid, Context(run_id=1, node_id=0))
    assert isinstance(caught.value, RoundFailed)
    reason = str(caught.value)
    assert reason.startswith("round 1 train: 0 of 2 replies usable (1 needed): node ")
    assert "ValueError: bad shape on node" in reason and "\n" not in reason
