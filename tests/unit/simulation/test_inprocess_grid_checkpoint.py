"""`InProcessGrid` keeps checkpoints in memory, through the wire encoding; `Grid` keeps none."""

from __future__ import annotations

import numpy as np
import pytest

from corolla.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.serverapp import Grid
from corolla.serverapp._run import Run
from corolla.simulation import InProcessGrid

pytestmark = pytest.mark.timeout(30)


def checkpoint() -> RecordDict:
    large = np.arange(40_000, dtype=np.float32)  # 160 kB: travels as an object, not inline
    return RecordDict(
        {
            "arrays": ArrayRecord({"big": large, "small": np.ones(2)}),
            "progress": ConfigRecord({"server-round": 2}),
            "m.1": MetricRecord({"loss": 0.5}),
        }
    )


def test_a_saved_checkpoint_is_loaded_back_as_sent_over_the_wire() -> None:
    grid = InProcessGrid(ClientApp(), num_nodes=1)
    assert grid.load_checkpoint() is None
    saved = checkpoint()
    grid.save_checkpoint(2, saved)
    loaded = grid.saved_checkpoint
    assert loaded is not None
    server_round, records = loaded
    assert server_round == 2
    assert records == saved
    assert records is not saved and records["arrays"] is not saved["arrays"]
    grid.save_checkpoint(3, RecordDict())  # replaces the previous one
    assert grid.saved_checkpoint == (3, RecordDict())
    # What this grid saved is not offered back to it: a second strategy.start() of the same
    # ServerApp starts afresh; only a new grid (a restarted ServerApp) resumes from it.
    assert grid.load_checkpoint() is None
    resumed = InProcessGrid(ClientApp(), num_nodes=1, checkpoint=grid.saved_checkpoint)
    assert resumed.load_checkpoint() == (3, RecordDict())


def test_a_grid_can_start_with_a_checkpoint() -> None:
    grid = InProcessGrid(ClientApp(), num_nodes=1, checkpoint=(2, checkpoint()))
    assert grid.saved_checkpoint == (2, checkpoint())
    assert grid.load_checkpoint() == (2, checkpoint())


def test_the_base_grid_keeps_no_checkpoint() -> None:
    class Bare(Grid):
        @property
        def run(self) -> Run:
            return Run.create_empty(1)

        def set_run(self, run: Run) -> None:
            raise NotImplementedError

        def send_and_receive(
            self, messages: object, *, timeout: float | None = None
        ) -> list[Message]:  # type: ignore[override]
            return []

        def create_message(self, *args: object, **kwargs: object) -> Message:  # type: ignore[override]
            raise NotImplementedError

        def get_node_ids(self) -> list[int]:
            return []

        def push_messages(self, messages: object) -> list[str]:
            return []

        def pull_messages(self, message_ids: object) -> list[object]:  # type: ignore[override]
            return []

    grid = Bare()
    grid.save_checkpoint(1, checkpoint())
    assert grid.load_checkpoint() is None
