"""Flower's telemetry names, with nothing behind them: Corolla collects and sends no telemetry.

Flower reports usage events (``event(EventType.RUN_SUPERLINK_ENTER)``) to a server of its
makers. Corolla keeps the names so that code calling them imports and runs, and does nothing
else: no event is recorded, stored, logged or sent, and no thread or connection is opened.
"""

from __future__ import annotations

from concurrent.futures import Future
from enum import StrEnum
from typing import Any

DISABLED = "disabled"  # what Flower's event future resolves to when telemetry is off


class EventType(StrEnum):
    """Flower's telemetry event names; each member's value is its name."""

    PING = "PING"
    START_CLIENT_ENTER = "START_CLIENT_ENTER"
    START_CLIENT_LEAVE = "START_CLIENT_LEAVE"
    START_SERVER_ENTER = "START_SERVER_ENTER"
    START_SERVER_LEAVE = "START_SERVER_LEAVE"
    START_SIMULATION_ENTER = "START_SIMULATION_ENTER"
    START_SIMULATION_LEAVE = "START_SIMULATION_LEAVE"
    FLWR_SIMULATION_RUN_ENTER = "FLWR_SIMULATION_RUN_ENTER"
    FLWR_SIMULATION_RUN_LEAVE = "FLWR_SIMULATION_RUN_LEAVE"
    FLWR_SERVERAPP_RUN_ENTER = "FLWR_SERVERAPP_RUN_ENTER"
    FLWR_SERVERAPP_RUN_LEAVE = "FLWR_SERVERAPP_RUN_LEAVE"
    CLI_FLOWER_SIMULATION_ENTER = "CLI_FLOWER_SIMULATION_ENTER"
    CLI_FLOWER_SIMULATION_LEAVE = "CLI_FLOWER_SIMULATION_LEAVE"
    PYTHON_API_RUN_SIMULATION_ENTER = "PYTHON_API_RUN_SIMULATION_ENTER"
    PYTHON_API_RUN_SIMULATION_LEAVE = "PYTHON_API_RUN_SIMULATION_LEAVE"
    RUN_SUPERLINK_ENTER = "RUN_SUPERLINK_ENTER"
    RUN_SUPERLINK_LEAVE = "RUN_SUPERLINK_LEAVE"
    RUN_SUPERNODE_ENTER = "RUN_SUPERNODE_ENTER"
    RUN_SUPERNODE_LEAVE = "RUN_SUPERNODE_LEAVE"
    RUN_SUPEREXEC_ENTER = "RUN_SUPEREXEC_ENTER"
    RUN_SUPEREXEC_LEAVE = "RUN_SUPEREXEC_LEAVE"


def event(event_type: EventType, event_details: dict[str, Any] | None = None) -> Future[str]:
    """Record nothing and send nothing: Corolla has no telemetry.

    Returns an already-completed future whose result is ``"disabled"`` (what Flower's future
    resolves to with telemetry turned off), so callers that wait on it return at once.
    ``event_type`` and ``event_details`` are ignored.
    """
    done: Future[str] = Future()
    done.set_result(DISABLED)
    return done
