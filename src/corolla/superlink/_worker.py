"""The loop of a background worker (launcher, dispatcher): errors are logged, not fatal."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_FAILED_TICKS = 20  # consecutive failed ticks before a worker gives up


def serve_ticks(
    name: str, tick: Callable[[], None], stopped: Callable[[], bool]
) -> Exception | None:
    """Call ``tick()`` until ``stopped()`` (which waits between ticks) says so. A tick that
    raises is logged with its traceback and the next one goes on; after `MAX_FAILED_TICKS`
    failures in a row the worker gives up and returns the last error (the daemon then exits
    non-zero with it), else None."""
    failed = 0
    while not stopped():
        try:
            tick()
            failed = 0
        except Exception as exc:
            failed += 1
            log.exception("%s: tick failed (%d in a row)", name, failed)
            if failed >= MAX_FAILED_TICKS:
                log.critical("%s cannot go on: %s", name, exc)
                return exc
    return None
