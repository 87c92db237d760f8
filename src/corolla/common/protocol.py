"""Protocol constants every side of the wire agrees on, defined once, and their checks."""

from __future__ import annotations

import math
from collections.abc import Mapping

from corolla.common.errors import InvalidArgument

SERVER_NODE_ID = 0  # the ServerApp's node id: the source of instructions, the target of replies
# The reason of the error reply that stands in for a reply that did not come within the TTL
# (the SuperLink's, and a simulation's: what an app observes must not differ).
TTL_EXPIRED_REASON = "message TTL expired before a reply arrived"
MAX_ACKS = 1024  # instruction ids one pull, or one message up a node's stream, may acknowledge
MAX_LONG_POLL = 30.0  # seconds: the longest wait a server grants one long-poll call
MIN_HEARTBEAT_INTERVAL = 0.05  # seconds: the range a SuperNode's heartbeat interval must be in
MAX_HEARTBEAT_INTERVAL = 3600.0
# Federation options travel as `flwr run` flattens the federation's table: dotted keys, the
# ``options`` table included. A run whose options hold this key is a simulation run of that many
# virtual SuperNodes; ``options.backend.*`` configure its backend.
NUM_SUPERNODES_OPTION = "options.num-supernodes"
BACKEND_OPTION = "options.backend"
MAX_SUPERNODES = 100_000


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


def check_num_supernodes(options: Mapping[str, object]) -> int | None:
    """``options.num-supernodes`` of a run's federation options: None (a deployed run), or an int in
    1..MAX_SUPERNODES (a simulation run); anything else is `InvalidArgument`."""
    num = options.get(NUM_SUPERNODES_OPTION)
    if num is None:
        return None
    if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= MAX_SUPERNODES:
        raise InvalidArgument(
            f"federation option {NUM_SUPERNODES_OPTION!r} must be an integer between 1 and "
            f"{MAX_SUPERNODES}, not {num!r}"
        )
    return num
