"""Change signals of the state: what long polls sleep on."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable, Iterable

from corolla.common.errors import InvalidArgument

ALL = "all"  # the key listeners get from `Signals.wake_all`

Listener = Callable[[Hashable], None]


class Signals:
    """Per-key change counters that waiters can sleep on; `wake_all` ends every current sleep.
    Listeners (`add_listener`) hear of every key notified, and of `ALL` on `wake_all`, in the
    thread that made the change: waiters of other kinds (coroutines) wake from them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[Hashable, int] = {}
        self._sleepers: dict[Hashable, tuple[threading.Condition, int]] = {}
        self._epoch = 0
        self._listeners: tuple[Listener, ...] = ()

    def add_listener(self, listener: Listener) -> None:
        """``listener(key)`` after each change; it must be quick and never block."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def snapshot(self, key: Hashable) -> tuple[int, int]:
        with self._lock:
            return self._versions.get(key, 0), self._epoch

    def notify(self, keys: Iterable[Hashable]) -> None:
        with self._lock:
            notified = list(keys)
            for key in notified:
                self._versions[key] = self._versions.get(key, 0) + 1
                if key in self._sleepers:
                    self._sleepers[key][0].notify_all()
            listeners = self._listeners
        for listener in listeners:
            for key in notified:
                listener(key)

    def wake_all(self) -> None:
        with self._lock:
            self._epoch += 1
            for condition, _ in self._sleepers.values():
                condition.notify_all()
            listeners = self._listeners
        for listener in listeners:
            listener(ALL)

    def sleep(self, key: Hashable, snapshot: tuple[int, int], timeout: float) -> None:
        """Sleep up to ``timeout`` seconds unless ``key`` changed since ``snapshot``."""
        with self._lock:
            if (self._versions.get(key, 0), self._epoch) != snapshot:
                return
            condition, count = self._sleepers.get(key) or (threading.Condition(self._lock), 0)
            self._sleepers[key] = (condition, count + 1)
            try:
                condition.wait(timeout)
            finally:
                condition, count = self._sleepers[key]
                if count == 1:
                    del self._sleepers[key]
                else:
                    self._sleepers[key] = (condition, count - 1)


def checked_wait(wait: float) -> float:
    if math.isnan(wait) or math.isinf(wait):
        raise InvalidArgument(f"wait must be a finite number of seconds, not {wait}")
    return min(max(wait, 0.0), threading.TIMEOUT_MAX)
