"""Garbage collection for a daemon that holds many long-lived objects (thousands of streams).

CPython's full collection visits every object the collector tracks. A SuperLink with 10,000
connected SuperNodes holds millions of them, nearly all alive for as long as their stream:
measured (`bench/fleet_scale.py`), a full collection took 1.1-1.4 s, came every 4 s during a
round, freed next to nothing, and nothing else ran meanwhile (heartbeats waited).

`SurvivorFreezer` freezes what survives a collection of the middle or the oldest generation
(`gc.freeze`: out of every later collection), so that a later one visits only what is newer
(freezing after full collections alone is not enough: the next one comes once a quarter as
many objects as the last one kept have piled up, 300 ms of work at 10,000 nodes). Acyclic
garbage goes at once, as ever (reference counts); cyclic garbage among frozen objects (a
stream that ended, whose objects hold each other) is freed by a collection of everything once
every ``full_every`` seconds, its survivors frozen again: one long pause in that time, not
one every few seconds.

Process-wide: only an entry point's ``main`` starts one.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

FULL_EVERY = 600.0  # seconds between full collections of everything, the frozen included


class SurvivorFreezer:
    def __init__(self, full_every: float = FULL_EVERY) -> None:
        if full_every <= 0:
            raise ValueError(f"full_every must be > 0, not {full_every}")
        self._full_every = full_every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        gc.callbacks.append(self._collected)
        self._thread = threading.Thread(target=self._periodic, name="gc-full", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Collection as it was: nothing frozen, no callback, no thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._collected in gc.callbacks:
            gc.callbacks.remove(self._collected)
        gc.unfreeze()

    def collect_all(self) -> int:
        """A full collection of everything, the frozen included; its survivors are frozen
        again. The number of objects it found unreachable."""
        gc.unfreeze()
        start = time.perf_counter()
        found = gc.collect()  # `_collected` freezes the survivors
        log.debug(
            "full collection: %d unreachable, %d frozen, %.0f ms",
            found,
            gc.get_freeze_count(),
            (time.perf_counter() - start) * 1000,
        )
        return found

    def _collected(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] >= 1:
            gc.freeze()  # the survivors: visited again only by `collect_all`

    def _periodic(self) -> None:
        while not self._stop.wait(self._full_every):
            self.collect_all()
