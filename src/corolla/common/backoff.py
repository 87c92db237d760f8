"""Capped exponential backoff with jitter, and the one retry policy built on it.

`retry` is what every loop that retries uses::

    run = retry(lambda: conn.get_run(node_id, run_id), stop=stopping, attempts=5)

It calls the function; on one of the ``retry_on`` errors it waits the next backoff delay and
calls again, until the call succeeds or it gives up (attempt limit, ``timeout`` window, or the
``stop`` event set). Giving up re-raises the last error unchanged; any other exception passes
straight through. Tests inject ``sleep`` and ``clock`` (and a ``Backoff`` with a fixed ``rng``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from corolla.common.errors import CorollaError, DeadlineExceeded, InvalidArgument, Unavailable

T = TypeVar("T")
log = logging.getLogger(__name__)

TRANSIENT: tuple[type[CorollaError], ...] = (Unavailable, DeadlineExceeded)
"""The errors `retry` retries by default: the peer is away or slow, it may come back."""


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


def retry(
    call: Callable[[], T],
    *,
    retry_on: tuple[type[CorollaError], ...] = TRANSIENT,
    stop: threading.Event | None = None,
    attempts: int | None = None,
    timeout: float | None = None,
    backoff: Backoff | None = None,
    on_retry: Callable[[int, CorollaError, float], None] | None = None,
    sleep: Callable[[float], object] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``call()`` until it returns, retrying on ``retry_on`` with capped jittered backoff.

    - ``attempts``: at most this many calls in all (None: no limit);
    - ``timeout``: no retry starts later than this many seconds after the first call (the
      last wait is shortened to end on the deadline; None: no limit);
    - ``stop``: once set, no further call is made; waits end early when it is set;
    - ``on_retry(attempt, error, delay)``: called before each wait (e.g. to log); by default a
      debug line is logged;
    - ``sleep``/``clock``: injectable; the default sleep is ``stop.wait`` (or `time.sleep`).

    Giving up re-raises the last ``retry_on`` error; callers tell a stop by ``stop.is_set()``.
    """
    if attempts is not None and attempts < 1:
        raise InvalidArgument("attempts must be at least 1")
    policy = backoff or Backoff()
    wait = sleep or (stop.wait if stop is not None else time.sleep)
    deadline = None if timeout is None else clock() + timeout
    made = 0
    while True:
        made += 1
        try:
            return call()
        except retry_on as exc:
            delay = policy.next_delay()
            if deadline is not None:
                delay = min(delay, deadline - clock())
            if (
                (attempts is not None and made >= attempts)
                or delay <= 0
                or (stop is not None and stop.is_set())
            ):
                raise
            if on_retry is not None:
                on_retry(made, exc, delay)
            else:
                log.debug("attempt %d failed: %s; retrying in %.1f s", made, exc, delay)
            wait(delay)
            if stop is not None and stop.is_set():
                raise
