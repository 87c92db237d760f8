"""Waiting in tests for something another process or thread makes true, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    """The first true value of ``condition()``; fails the test naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value
