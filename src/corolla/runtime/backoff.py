"""Capped exponential backoff with jitter, for reconnecting app processes."""

from __future__ import annotations

import random
import time


class Backoff:
    def __init__(self, initial: float = 0.5, cap: float = 10.0, jitter: float = 0.2) -> None:
        self._initial, self._cap, self._jitter = initial, cap, jitter
        self._current = initial

    def next(self) -> float:
        delay = self._current * random.uniform(1 - self._jitter, 1 + self._jitter)
        self._current = min(self._current * 2, self._cap)
        return delay

    def reset(self) -> None:
        self._current = self._initial

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds)
