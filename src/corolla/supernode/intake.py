"""Per-run intake: one worker thread per run with pulled messages to take in.

Taking a message in (`Fetcher`: fetching its run, FAB and objects, then queueing it) can be
slow; it happens on the run's own worker (`Intake`), so one run's slow download never holds up
the pull loop or the other runs. A run's messages are taken in the order they were pulled. A
worker ends once its run has nothing left to take in; the next message starts a new one.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from corolla.common.backoff import retry
from corolla.common.errors import CorollaError, NotFound
from corolla.common.transfer import TransferLog
from corolla.records import ErrorCode
from corolla.records.context import UserConfig
from corolla.supernode.connection import FleetConnection, Stopped
from corolla.supernode.convert import new_context
from corolla.supernode.domain import Envelope
from corolla.supernode.outbox import Outbox
from corolla.supernode.runs import RunState, RunTable

log = logging.getLogger(__name__)

JOIN_TIMEOUT = 5.0  # seconds `stop` waits for each worker
INTAKE_ATTEMPTS = 6  # fetch attempts (0.5 s .. 8 s apart) before a message gets an error reply
OBJECT_ROUNDS = 3  # objects released meanwhile (shared with a reply) are fetched again

Take = Callable[[int, Envelope], None]  # (node id, message): take it in, never raises
Guard = Callable[[Callable[[], None]], Callable[[], None]]


class Fetcher:
    """Takes a message in: fetches what it needs, queues it, and has its app process ready
    (``ready``); a message that cannot be taken gets an error reply."""

    def __init__(
        self,
        connection: FleetConnection,
        runs: RunTable,
        outbox: Outbox,
        *,
        node_config: UserConfig,
        stop: threading.Event,
        ready: Callable[[RunState], None],
    ) -> None:
        self._conn = connection
        self._runs = runs
        self._outbox = outbox
        self._node_config = node_config
        self._stop = stop
        self._ready = ready

    def take_in(self, node_id: int, message: Envelope) -> None:
        """Runs on the run's intake worker. The SuperLink handed the message over already, so
        a SuperLink that is briefly away is waited for; a message that cannot be taken gets an
        error reply (the round goes on)."""
        run_id, message_id = message.run_id, message.message_id

        def warn(attempt: int, exc: CorollaError, delay: float) -> None:
            log.warning("run %d: cannot fetch %s yet: %s", run_id, message_id, exc)

        try:
            state = retry(
                lambda: self._take(node_id, message),
                stop=self._stop,
                attempts=INTAKE_ATTEMPTS,
                on_retry=warn,
            )
        except Stopped:
            return
        except CorollaError as exc:
            log.warning("run %d: cannot take message %s: %s", run_id, message_id, exc)
            self._outbox.fail(
                message, ErrorCode.MESSAGE_UNAVAILABLE, f"the SuperNode cannot take it: {exc}"
            )
            return
        if state is None:
            self._outbox.fail(message, ErrorCode.RUN_STOPPED, f"run {run_id} has finished")
            return
        self._ready(state)

    def _take(self, node_id: int, message: Envelope) -> RunState | None:
        """Queue ``message`` with its objects in place; None if its run has finished here."""
        run_id = message.run_id
        state = self._runs.get(run_id) or self._open_run(node_id, run_id)
        if not state.active:
            return None
        self._runs.make_room(state, message)
        needed = self._runs.missing_objects(state, message.object_ids)
        for _ in range(OBJECT_ROUNDS):
            if needed:  # written to the run's files as they arrive
                what = f"run {run_id}: fetching {len(needed)} objects"
                progress = TransferLog(what, log)
                self._conn.pull_objects(node_id, run_id, needed, state.objects.sink, progress)
            needed = self._runs.enqueue(state, message)
            if not needed:
                return state
        raise NotFound(f"objects of message {message.message_id} vanished")

    def _open_run(self, node_id: int, run_id: int) -> RunState:
        run = self._conn.get_run(node_id, run_id)
        fab = self._conn.get_fab(node_id, run_id, run.fab_hash)
        context = new_context(run_id, node_id, self._node_config, run.run_config)
        log.info("run %d: app %s %s (FAB %.12s)", run_id, run.fab_id, run.fab_version, fab.hash)
        return self._runs.open(run, fab, context)


class Intake:
    def __init__(self, take: Take, guard: Guard) -> None:
        self._take = take
        self._guard = guard  # reports a crash in a worker to the node
        self._lock = threading.Lock()
        self._pending: dict[int, deque[tuple[int, Envelope]]] = {}
        self._workers: dict[int, threading.Thread] = {}
        self._stopping = False

    def submit(self, node_id: int, message: Envelope) -> None:
        """Queue ``message`` for its run's worker (started if the run has none)."""
        run_id = message.run_id
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
