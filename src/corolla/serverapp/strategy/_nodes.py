"""Waiting for enough nodes to come online, and sampling some of them for a round."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from corolla.common.errors import DeadlineExceeded
from corolla.serverapp.grid import Grid

log = logging.getLogger(__name__)

_POLL_START = 0.01  # seconds between the first looks at the node list
_POLL_MAX = 1.0  # ... growing to at most this


def wait_for_nodes(
    grid: Grid,
    min_nodes: int,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[int]:
    """The online node ids, once there are at least ``min_nodes`` of them.

    Polls ``grid.get_node_ids()`` with a short, growing pause; raises `DeadlineExceeded` if
    fewer than ``min_nodes`` are online after ``timeout`` seconds.
    """
    deadline = clock() + timeout
    delay = _POLL_START
    announced = False
    while True:
        node_ids = grid.get_node_ids()
        if len(node_ids) >= min_nodes:
            return node_ids
        remaining = deadline - clock()
        if remaining <= 0:
            raise DeadlineExceeded(
                f"waited {timeout:g} s for {min_nodes} nodes to come online, "
                f"but only {len(node_ids)} did"
            )
        if not announced:
            log.info(
                "Waiting for %d nodes to come online (%d online, giving up in %g s)",
                min_nodes,
                len(node_ids),
                timeout,
            )
            announced = True
        sleep(min(delay, remaining))
        delay = min(delay * 2, _POLL_MAX)


def sample_nodes(
    grid: Grid,
    *,
    fraction: float,
    min_nodes: int,
    min_available_nodes: int,
    timeout: float,
    rng: random.Random,
) -> tuple[list[int], int]:
    """A random sample of ``max(min_nodes, int(fraction * n))`` of the ``n`` online nodes.

    Waits first until ``max(min_available_nodes, min_nodes)`` nodes are online. Returns the
    sampled ids (sorted) and ``n``.
    """
    node_ids = wait_for_nodes(grid, max(min_available_nodes, min_nodes), timeout)
    size = min(len(node_ids), max(min_nodes, int(fraction * len(node_ids))))
    return sorted(rng.sample(node_ids, size)), len(node_ids)
