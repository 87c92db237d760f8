"""What a `Grid` tells its ServerApp about the run and the nodes: `Run`, `RunStatus`, `NodeInfo`.

The field names are Flower's, so that ``grid.run.fab_id`` reads the same in a ported app.
Timestamps are ISO 8601 strings in UTC, empty when not known.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime

from corolla.records import UserConfig


@dataclass(frozen=True)
class RunStatus:
    """``status`` is pending, starting, running or finished; once finished, ``sub_status`` is
    completed, failed or stopped and ``details`` says why."""

    status: str
    sub_status: str
    details: str


@dataclass(frozen=True)
class Run:
    """A run as its ServerApp sees it: the app (``fab_id`` is ``"publisher/name"``), the
    ``override_config`` given at submission, its status and when it changed, who submitted it
    (``flwr_aid``) and to which federation."""

    run_id: int
    fab_id: str
    fab_version: str
    fab_hash: str
    override_config: UserConfig
    pending_at: str
    starting_at: str
    running_at: str
    finished_at: str
    status: RunStatus
    flwr_aid: str
    federation: str = ""

    @classmethod
    def create_empty(cls, run_id: int) -> Run:
        """A run known by its id only: every other field empty."""
        return cls(
            run_id=run_id,
            fab_id="",
            fab_version="",
            fab_hash="",
            override_config={},
            pending_at="",
            starting_at="",
            running_at="",
            finished_at="",
            status=RunStatus(status="", sub_status="", details=""),
            flwr_aid="",
        )

    def copy(self) -> Run:
        """This run with its own copy of ``override_config`` (handed out by grids, so that
        changing the dict a caller got does not change the grid's)."""
        return dataclasses.replace(self, override_config=dict(self.override_config))


@dataclass(frozen=True)
class NodeInfo:
    """A node a `Grid` can send messages to."""

    node_id: int


def local_run(run_id: int, run_config: UserConfig) -> Run:
    """The run a grid in this process serves when nothing else describes it (a test, a
    simulation started from Python): running, with ``run_config`` as its overrides."""
    return dataclasses.replace(
        Run.create_empty(run_id),
        override_config=dict(run_config),
        status=RunStatus(status="running", sub_status="", details=""),
    )


def timestamp(seconds: float) -> str:
    """``seconds`` since the epoch as an ISO 8601 string in UTC; ``""`` for 0 (never)."""
    if not seconds:
        return ""
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()


__all__ = ["NodeInfo", "Run", "RunStatus", "local_run", "timestamp"]
