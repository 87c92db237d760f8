"""Per-run intake: one worker thread per run with pulled messages to take in.

Taking a message in (fetching its run, FAB and objects) can be slow; it happens on the run's
own worker, so one run's slow download never holds up the pull loop or the other runs. A
run's messages are taken in the order they were pulled. A worker ends once its run has
nothing left to take in; the next message starts a new one.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from corolla.proto.v1 import message_pb2 as mpb

log = logging.getLogger(__name__)

JOIN_TIMEOUT = 5.0  # seconds `stop` waits for each worker

Take = Callable[[int, mpb.Message], None]  # (node id, message): take it in, never raises
Guard = Callable[[Callable[[], None]], Callable[[], None]]


class Intake:
    def __init__(self, take: Take, guard: Guard) -> None:
        self._take = take
        self._guard = guard  # reports a crash in a worker to the node
        self._lock = threading.Lock()
        self._pending: dict[int, deque[tuple[int, mpb.Message]]] = {}
        self._workers: dict[int, threading.Thread] = {}
        self._stopping = False

    def submit(self, node_id: int, message: mpb.Message) -> None:
        """Queue ``message`` for its run's worker (started if the run has none)."""
        run_id = message.metadata.run_id
        with self._lock:
            if self._stopping:
                return
            self._pending.setdefault(run_id, deque()).append((node_id, message))
            if run_id in self._workers:
                return
            worker = threading.Thread(
                target=self._guard(lambda: self._work(run_id)),
                name=f"intake-run-{run_id}",
                daemon=True,
            )
            self._workers[run_id] = worker
        worker.start()

    def busy_runs(self) -> list[int]:
        """Runs with a worker taking messages in right now."""
        with self._lock:
            return list(self._workers)

    def stop(self) -> None:
        """Take no more messages; wait (bounded) for the workers to finish what they hold."""
        with self._lock:
            self._stopping = True
            self._pending.clear()
            workers = list(self._workers.values())
        for worker in workers:
            worker.join(JOIN_TIMEOUT)

    def _work(self, run_id: int) -> None:
        try:
            while True:
                with self._lock:
                    queue = self._pending.get(run_id)
                    if not queue:
                        self._pending.pop(run_id, None)
                        del self._workers[run_id]
                        return
                    node_id, message = queue.popleft()
                self._take(node_id, message)
        except BaseException:
            with self._lock:  # a crashed worker must not leave the run without one forever
                self._workers.pop(run_id, None)
            raise
