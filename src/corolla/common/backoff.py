"""Capped exponential backoff with jitter, for everything that reconnects."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Capped exponential delays with jitter: 0.5 s doubling up to 10 s by default."""

    def __init__(
        self,
        initial: float = 0.5,
        cap: float = 10.0,
        jitter: float = 0.2,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._initial, self._cap, self._jitter, self._rng = initial, cap, jitter, rng
        self._next = initial
        self.attempts = 0

    def next_delay(self) -> float:
        base = self._next
        self._next = min(self._cap, self._next * 2)
        self.attempts += 1
        spread = 1.0 + self._jitter * (2 * self._rng() - 1)
        return min(self._cap, base * spread)

    def reset(self) -> None:
        self._next = self._initial
        self.attempts = 0
