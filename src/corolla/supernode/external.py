"""Isolation `process`: `flwr-clientapp` processes managed by the operator attach to runs.

The SuperNode starts no app process. A run whose message waits is handed to one `RequestRun`
caller (`RunTable.hand_out`); that process serves all of the run's messages on this node and
shows it lives with `Heartbeat` (every call with its token counts). A watchdog thread:

- detaches a process silent for ``heartbeat_timeout`` s: the message it held gets an error
  reply and the run waits for the next process (its context stays here);
- answers a message that waited ``attach_timeout`` s with no process attached with an error;
- warns once per wait when a message waited ``WARN_AFTER`` s with no process attached (a
  process in a `RequestRun` long poll attaches well before that);
- forgets a finished run once its process has let go of it.

Times come from the run table's clock, so `tick` is tested without sleeping.
"""

from __future__ import annotations

import logging
import threading

from corolla.records import ErrorCode
from corolla.supernode.domain import Envelope
from corolla.supernode.outbox import Outbox
from corolla.supernode.runs import RunState, RunTable

log = logging.getLogger(__name__)

SILENT_REASON = "flwr-clientapp process stopped responding"
TICK = 0.2  # seconds between watchdog checks
WARN_AFTER = 1.0  # seconds a message waits with no app process attached before a warning

_Failure = tuple[Envelope, int, str]


def attach_reason(timeout: float) -> str:
    return (
        f"no flwr-clientapp process attached to this SuperNode within {timeout:g} s "
        "(isolation process)"
    )


class ExternalApps:
    def __init__(
        self,
        runs: RunTable,
        outbox: Outbox,
        *,
        app_address: str,
        attach_timeout: float,
        heartbeat_timeout: float,
    ) -> None:
        self._runs = runs
        self._outbox = outbox
        self._app_address = app_address
        self._attach_timeout = attach_timeout
        self._heartbeat_timeout = heartbeat_timeout
        self._warn_after = min(WARN_AFTER, attach_timeout / 2)  # warn before answering
        self._stopping = threading.Event()

    def ensure_process(self, state: RunState) -> None:
        """A message was queued: nothing to start, it waits for an app process to attach (the
        queue wakes `RequestRun` callers; `tick` answers it if none comes)."""

    def finish_run(self, run_id: int) -> None:
        """The run ended: its process learns it on its next call; forget the run once it let go."""
        state = self._runs.get(run_id)
        if state is None or not state.active:
            return
        log.info("run %d: finished", run_id)
        self._runs.release(state)

    def stop_all(self) -> None:
        """End every run here; messages held by app processes get an error reply."""
        self._stopping.set()
        self._runs.close()
        for state in self._runs.all():
            self._runs.deactivate(state)
            for message in self._runs.take_inflight(state):
                self._outbox.fail(message, ErrorCode.NODE_UNAVAILABLE, "the SuperNode stopped")

    def watch(self) -> None:
        """The watchdog thread: `tick` until the node stops."""
        while not self._stopping.wait(TICK):
            self.tick()

    def tick(self) -> None:
        failures: list[_Failure] = []

        def visit(state: RunState, now: float) -> None:
            if state.attached is not None:
                silent = now - state.attached.last_seen
                if silent > self._heartbeat_timeout:
                    failures.extend(self._lost(state, silent))
            elif not state.active:
                self._runs.drop(state)  # finished, and its process let go of it
            else:
                self._warn_if_waiting(state, now)
                failures.extend(self._expire(state, now))

        self._runs.sweep(visit)
        for message, code, reason in failures:
            self._outbox.fail(message, code, reason)

    def _lost(self, state: RunState, silent: float) -> list[_Failure]:
        inflight = self._runs.detach(state)
        if not state.active:
            log.info("run %d: its flwr-clientapp process let go of the finished run", state.run_id)
            self._runs.drop(state)
            return []
        log.warning(
            "run %d: %s (no heartbeat for %.1f s); %d message(s) it held get an error reply; "
            "the run waits for another flwr-clientapp process",
            state.run_id,
            SILENT_REASON,
            silent,
            len(inflight),
        )
        code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        return [(message, code, SILENT_REASON) for message in inflight]

    def _expire(self, state: RunState, now: float) -> list[_Failure]:
        """Take out the queued messages that waited too long for an app process to attach."""
        expired = [
            message_id
            for message_id, queued_at in state.queued_at.items()
            if now - max(queued_at, state.unattached_since) >= self._attach_timeout
        ]
        if not expired:
            return []
        messages = self._runs.take_waiting(state, expired)
        if not state.queue:  # this wait is over: the next message warns afresh
            state.warned = False
        log.warning(
            "run %d: %s; %d message(s) get an error reply",
            state.run_id,
            attach_reason(self._attach_timeout),
            len(messages),
        )
        reason = attach_reason(self._attach_timeout)
        return [(m, ErrorCode.LOAD_CLIENT_APP_EXCEPTION, reason) for m in messages]

    def _warn_if_waiting(self, state: RunState, now: float) -> None:
        if not self._runs.needs_app(state):
            state.warned = False
            return
        oldest = min(state.queued_at.values(), default=now)
        if state.warned or now - max(oldest, state.unattached_since) < self._warn_after:
            return
        state.warned = True
        log.warning(
            "run %d: %d message(s) wait for a flwr-clientapp process, but none is attached "
            "(isolation process); start one with: flwr-clientapp --clientappio-api-address %s",
            state.run_id,
            len(state.queue),
            self._app_address,
        )
