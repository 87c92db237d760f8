"""`IdleWatch`: when a SuperLink started with ``--idle-timeout`` has nothing left to do.

Idle means: no run pending, starting or running, and no Exec call, for the whole timeout. The
serve loop asks `expired()` on every tick; the Exec authenticator calls `touch()` on every call
(wrapped around it in `link.py`, so no servicer knows about it). The clock is injectable, so the
timeout is tested without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class IdleWatch:
    """``busy()`` says whether a run is unfinished; ``clock`` is monotonic seconds."""

    def __init__(
        self,
        timeout: float,
        busy: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self._busy = busy
        self._clock = clock
        self._lock = threading.Lock()
        self._last = clock()

    def touch(self) -> None:
        """Something happened (an Exec call): the idle time starts again from now."""
        now = self._clock()
        with self._lock:
            self._last = max(self._last, now)

    def idle_for(self) -> float:
        """Seconds without activity so far (0 while a run is unfinished)."""
        if self._busy():
            self.touch()
        with self._lock:
            return max(0.0, self._clock() - self._last)

    def expired(self) -> bool:
        return self.idle_for() >= self.timeout
