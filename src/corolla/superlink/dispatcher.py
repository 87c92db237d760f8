"""Isolation ``process``: hand pending runs to attached flwr-serverapp processes, watch them."""

from __future__ import annotations

import logging
import threading
import time

from corolla.common.errors import CorollaError, FailedPrecondition
from corolla.superlink.state import LinkState, RunStatus, SubStatus

log = logging.getLogger(__name__)

WAITING = "waiting for a flwr-serverapp process to attach (isolation process)"


class AppHeartbeats:
    """When each run's app process last showed a sign of life (monotonic seconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[int, float] = {}

    def beat(self, run_id: int) -> None:
        with self._lock:
            self._seen[run_id] = time.monotonic()

    def age(self, run_id: int) -> float | None:
        with self._lock:
            seen = self._seen.get(run_id)
        return None if seen is None else time.monotonic() - seen

    def forget(self, run_id: int) -> None:
        with self._lock:
            self._seen.pop(run_id, None)


class ProcessDispatcher:
    """Gives each pending run to one ``RequestRun`` caller; fails runs nobody picks up within
    ``attach_timeout`` and runs whose app process stops sending heartbeats."""

    def __init__(
        self,
        state: LinkState,
        heartbeats: AppHeartbeats,
        *,
        attach_timeout: float,
        heartbeat_timeout: float,
        poll: float = 0.5,
    ) -> None:
        self._state = state
        self._heartbeats = heartbeats
        self._attach_timeout = attach_timeout
        self._heartbeat_timeout = heartbeat_timeout
        self._poll = poll
        self._changed = threading.Condition()
        self._claim_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="run-dispatcher", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.notify()
        self._thread.join(timeout=5)

    def notify(self) -> None:
        """A run was submitted or stopped."""
        with self._changed:
            self._changed.notify_all()

    def claim(self, wait: float) -> tuple[int, str] | None:
        """The oldest pending run and a new token for it, waiting up to ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while not self._stop.is_set():
            claimed = self._try_claim()
            if claimed is not None:
                return claimed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with self._changed:
                self._changed.wait(min(remaining, self._poll))
        return None

    def _try_claim(self) -> tuple[int, str] | None:
        with self._claim_lock:
            for run in self._state.list_runs():
                if run.status != RunStatus.PENDING:
                    continue
                try:
                    self._state.update_run_status(run.run_id, RunStatus.STARTING)
                except FailedPrecondition:
                    continue  # stopped meanwhile
                self._heartbeats.beat(run.run_id)
                log.info("run %d handed to an attached flwr-serverapp process", run.run_id)
                return run.run_id, self._state.create_token(run.run_id)
        return None

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self._poll):
                self._check()
        except BaseException as exc:  # reaches main via .error
            log.exception("run dispatcher crashed")
            self.error = exc

    def _check(self) -> None:
        now = self._state.clock()
        for run in self._state.list_runs():
            try:
                if run.status == RunStatus.PENDING:
                    self._check_pending(run.run_id, now - run.pending_at, run.details)
                elif run.status in (RunStatus.STARTING, RunStatus.RUNNING):
                    age = self._heartbeats.age(run.run_id)
                    if age is not None and age > self._heartbeat_timeout:
                        self._fail(
                            run.run_id,
                            "flwr-serverapp process stopped responding "
                            f"(no heartbeat for {age:.0f} s)",
                        )
                elif self._heartbeats.age(run.run_id) is not None:
                    self._heartbeats.forget(run.run_id)
                    self._state.delete_run_objects(run.run_id)
            except CorollaError:
                log.debug("run %d changed while being checked", run.run_id)

    def _check_pending(self, run_id: int, waited: float, details: str) -> None:
        if waited > self._attach_timeout:
            self._fail(
                run_id,
                f"no flwr-serverapp process attached within {self._attach_timeout:.0f} s "
                "(isolation process)",
            )
        elif details != WAITING:
            self._state.annotate_run(run_id, WAITING)

    def _fail(self, run_id: int, reason: str) -> None:
        self._state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.FAILED, reason)
        self._state.append_logs(run_id, [f"ERROR run failed: {reason}"])
        self._heartbeats.forget(run_id)
        log.warning("run %d failed: %s", run_id, reason)
