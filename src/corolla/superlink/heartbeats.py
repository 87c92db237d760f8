"""When each run's app process last showed a sign of life (both isolation modes)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class AppHeartbeats:
    """When each run's app process last showed a sign of life (by ``clock``, in seconds)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._seen: dict[int, float] = {}
        self._clock = clock

    def beat(self, run_id: int) -> None:
        with self._lock:
            self._seen[run_id] = self._clock()

    def age(self, run_id: int) -> float | None:
        with self._lock:
            seen = self._seen.get(run_id)
        return None if seen is None else self._clock() - seen

    def forget(self, run_id: int) -> None:
        with self._lock:
            self._seen.pop(run_id, None)

    def known(self) -> list[int]:
        with self._lock:
            return list(self._seen)
