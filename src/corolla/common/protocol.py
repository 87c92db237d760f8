"""Protocol constants every side of the wire agrees on, defined once, and their checks."""

from __future__ import annotations

import math

from corolla.common.errors import InvalidArgument

SERVER_NODE_ID = 0  # the ServerApp's node id: the source of instructions, the target of replies
MAX_LONG_POLL = 30.0  # seconds: the longest wait a server grants one long-poll call
MIN_HEARTBEAT_INTERVAL = 0.05  # seconds: the range a SuperNode's heartbeat interval must be in
MAX_HEARTBEAT_INTERVAL = 3600.0


def check_wait(seconds: float, what: str = "wait_seconds") -> float:
    """A long poll's wait: finite and >= 0 (else `InvalidArgument`), capped at MAX_LONG_POLL."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise InvalidArgument(f"{what} must be a finite number >= 0, not {seconds}")
    return min(seconds, MAX_LONG_POLL)


def check_heartbeat_interval(seconds: float) -> float:
    if not MIN_HEARTBEAT_INTERVAL <= seconds <= MAX_HEARTBEAT_INTERVAL:
        raise InvalidArgument(
            f"heartbeat_interval must be between {MIN_HEARTBEAT_INTERVAL:g} and "
            f"{MAX_HEARTBEAT_INTERVAL:g} seconds, not {seconds}"
        )
    return seconds
