"""Nodes' heartbeats in memory, for a state that is the only one writing its database.

Ten thousand nodes heartbeat hundreds of times a second, and every Fleet call asks whether its
node is online. With `Liveness` both are a dictionary operation under a lock of its own (never
the database's), and the heartbeats reach the ``nodes`` table in batches: at most every
`FLUSH_INTERVAL` seconds, and before anything reads them there (`NodeStore` flushes before a
query that reads ``online_until``). A crash loses at most the last batch, which the nodes'
next heartbeats restore. SQLite uses it; PostgreSQL, whose database other SuperLinks may share,
does not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

FLUSH_INTERVAL = 1.0  # seconds between batches of heartbeats written to the database


@dataclass(frozen=True)
class Beat:
    heartbeat_interval: float
    online_until: float
    last_seen: float


class Liveness:
    def __init__(
        self, beats: Iterable[tuple[int, Beat]], *, ticker: Callable[[], float] = time.monotonic
    ) -> None:
        """``beats``: every registered node's, as the database has them; ``ticker``: what
        times the batches (not the state's clock: batching changes no answer)."""
        self._lock = threading.Lock()
        self._beats = dict(beats)
        self._dirty: dict[int, Beat] = {}
        self._ticker = ticker
        self._flushed_at = ticker()
        self._claimed = False  # a caller is about to write the due batch

    def set(self, node_id: int, beat: Beat) -> None:
        """A node registered (the database has its row)."""
        with self._lock:
            self._beats[node_id] = beat
            self._dirty.pop(node_id, None)

    def forget(self, node_id: int) -> None:
        """A node removed (its row too)."""
        with self._lock:
            self._beats.pop(node_id, None)
            self._dirty.pop(node_id, None)

    def beat(self, node_id: int, beat: Beat) -> bool:
        """A heartbeat; False for a node that is not registered."""
        with self._lock:
            if node_id not in self._beats:
                return False
            self._beats[node_id] = self._dirty[node_id] = beat
            return True

    def online(self, node_id: int, now: float) -> bool:
        with self._lock:
            beat = self._beats.get(node_id)
        return beat is not None and beat.online_until > now

    def online_ids(self, now: float) -> list[int]:
        with self._lock:
            return sorted(n for n, beat in self._beats.items() if beat.online_until > now)

    def due(self) -> bool:
        """Whether a batch is due (heartbeats waiting longer than `FLUSH_INTERVAL`) and nobody
        has claimed it yet."""
        with self._lock:
            return self._due()

    def _due(self) -> bool:
        waited = self._ticker() - self._flushed_at
        return bool(self._dirty) and waited >= FLUSH_INTERVAL and not self._claimed

    def claim(self) -> bool:
        """True for the one caller that is to write the due batch now (`take`, then
        `written`); False if none is due or another caller has it."""
        with self._lock:
            if not self._due():
                return False
            self._claimed = True
            return True

    def unclaim(self) -> None:
        with self._lock:
            self._claimed = False

    def take(self) -> list[tuple[int, Beat]]:
        """The heartbeats not written yet (to write now); the next batch falls due
        `FLUSH_INTERVAL` after this."""
        with self._lock:
            taken, self._dirty = list(self._dirty.items()), {}
            self._flushed_at = self._ticker()
            self._claimed = False
        return taken
