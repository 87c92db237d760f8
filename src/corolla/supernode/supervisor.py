"""Keeps one warm ClientApp process per active run, and answers for the ones that die.

A process that exits while handling a message gets that message answered with an error reply
(so the round goes on) and the next message starts a fresh process; a process that dies before
taking any work fails the waiting messages instead of being restarted in a loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from corolla.common.spare import SparePool
from corolla.common.tls import AppTls
from corolla.records import ErrorCode
from corolla.supernode.domain import Envelope
from corolla.supernode.launcher import TERM_GRACE, VOLUNTARY_EXIT, AppProcess
from corolla.supernode.outbox import Outbox
from corolla.supernode.runs import RunState, RunTable

log = logging.getLogger(__name__)

Guard = Callable[[Callable[[], None]], Callable[[], None]]


class Supervisor:
    def __init__(
        self,
        runs: RunTable,
        outbox: Outbox,
        app_address: str,
        guard: Guard,
        app_tls: AppTls | None = None,
        app_env: tuple[str, ...] = (),
        spares: SparePool | None = None,
    ) -> None:
        self._runs = runs
        self._outbox = outbox
        self._app_address = app_address
        self._app_tls = app_tls  # None: the children connect without TLS (loopback)
        self._app_env = app_env  # the operator's --app-env, besides the allow-list
        self._guard = guard  # reports a crash in a watcher thread to the node
        self._spares = spares  # the node's spare ClientApp process (the node starts and closes it)
        self._stopping = threading.Event()

    def fail(self, message: Envelope, code: int, reason: str) -> None:
        """Answer ``message`` with an error reply on its ClientApp's behalf."""
        self._outbox.fail(message, code, reason)

    def ensure_process(self, state: RunState, *, only_if_queued: bool = False) -> None:
        """Start the run's app process unless one is running (or nothing waits for one)."""
        if self._stopping.is_set() or not self._runs.claim_start(
            state, only_if_queued=only_if_queued
        ):
            return
        try:  # no lock is held while the child starts
            process = AppProcess.spawn(
                run_id=state.run_id,
                address=self._app_address,
                token=state.token,
                tls=self._app_tls,
                app_env=self._app_env,
                spares=self._spares,
                on_exit=lambda process, code: self._guard(
                    lambda: self._exited(state, process, code)
                )(),
            )
        except OSError as exc:  # e.g. out of processes or memory: fail the work, live on
            log.error("run %d: cannot start a ClientApp process: %s", state.run_id, exc)
            for message in self._runs.start_failed(state):
                self.fail(
                    message,
                    ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                    f"the SuperNode cannot start a ClientApp process: {exc}",
                )
            return
        if not self._runs.started(state, process):  # the run ended while it started
            process.stop()
        process.watch()

    def finish_run(self, run_id: int) -> None:
        """The run ended: wake its app process's long poll, stop the process, forget the run."""
        state = self._runs.get(run_id)
        if state is None:
            return
        log.info("run %d: finished; stopping its ClientApp process", run_id)
        self._runs.release(state)
        process = state.process
        if process is not None:
            process.stop()

    def stop_all(self) -> None:
        """End every run here and reap every app process (SIGTERM, then SIGKILL if need be)."""
        self._stopping.set()
        processes = []
        for state in self._runs.all():
            self._runs.deactivate(state)
            if state.process is not None:
                state.process.stop()
                processes.append(state.process)
        for process in processes:
            process.join(VOLUNTARY_EXIT + 2 * TERM_GRACE + 1)

    def _exited(self, state: RunState, process: AppProcess, code: int) -> None:
        reason = f"ClientApp process exited with code {code}"
        outcome = self._runs.process_exited(state, process)
        if outcome is None:
            return
        inflight, failed, active = outcome
        for message in failed:  # it died before taking work: fail, do not loop
            self.fail(message, ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason)
        if not active:
            if self._stopping.is_set():  # the node stops: tell the ServerApp now
                for message in inflight:
                    self.fail(message, ErrorCode.NODE_UNAVAILABLE, "the SuperNode stopped")
            return
        for message in inflight:
            log.warning("run %d: %s handling %s", state.run_id, reason, message.message_id)
            self.fail(message, ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason)
        self.ensure_process(state, only_if_queued=True)  # the next message: a fresh process
