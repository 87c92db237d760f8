"""Isolation ``process``: hand pending runs to attached flwr-serverapp processes, watch them."""

from __future__ import annotations

import logging
import threading
import time

from corolla.common.errors import CorollaError
from corolla.superlink._worker import serve_ticks
from corolla.superlink.heartbeats import AppHeartbeats
from corolla.superlink.runs import Runs, queued_details
from corolla.superlink.state import RunRecord, RunStatus

log = logging.getLogger(__name__)

WAITING = "waiting for a flwr-serverapp process to attach (isolation process)"


class ProcessDispatcher:
    """Gives each pending run to one ``RequestRun`` caller; fails runs nobody picks up within
    ``attach_timeout`` and runs whose app process stops sending heartbeats."""

    def __init__(
        self,
        runs: Runs,
        heartbeats: AppHeartbeats,
        *,
        attach_timeout: float,
        heartbeat_timeout: float,
        max_concurrent: int = 2,
        poll: float = 0.5,
    ) -> None:
        self._runs = runs
        self._state = runs.state
        self._max = max_concurrent
        self._eligible: dict[int, float] = {}  # pending run -> when it could first be claimed
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
            active = self._state.active_runs()
            serving = sum(run.status != RunStatus.PENDING for run in active)
            for run in active:
                if run.status != RunStatus.PENDING or serving >= self._max:
                    continue
                if not self._runs.start(run.run_id):
                    continue  # stopped meanwhile
                self._heartbeats.beat(run.run_id)
                log.info("run %d handed to an attached flwr-serverapp process", run.run_id)
                return run.run_id, self._state.create_token(run.run_id)
        return None

    def _loop(self) -> None:
        self.error = serve_ticks(
            "the run dispatcher", self.check, lambda: self._stop.wait(self._poll)
        )

    def check(self) -> None:
        now = self._state.clock()
        active = self._state.active_runs()
        serving = sum(run.status != RunStatus.PENDING for run in active)
        serving_ids = {run.run_id for run in active if run.status != RunStatus.PENDING}
        ahead = 0
        watched = set()
        for run in active:
            watched.add(run.run_id)
            try:
                if run.status == RunStatus.PENDING:
                    if serving + ahead >= self._max:
                        self._runs.note(run, queued_details(serving + ahead - self._max))
                        ahead += 1
                        continue
                    ahead += 1
                    since = self._eligible.setdefault(run.run_id, now)
                    self._check_pending(run, now - since)
                else:
                    age = self._heartbeats.age(run.run_id)
                    if age is None:  # e.g. after a SuperLink restart: one timeout to show up
                        self._heartbeats.beat(run.run_id)
                    elif age > self._heartbeat_timeout:
                        self._heartbeats.forget(run.run_id)
                        self._runs.lost_app(
                            run.run_id,
                            "flwr-serverapp process stopped responding "
                            f"(no heartbeat for {age:.0f} s)",
                        )
            except CorollaError as exc:
                log.info("run %d changed while being checked: %s", run.run_id, exc)
        for run_id in [r for r in self._eligible if r not in watched or r in serving_ids]:
            del self._eligible[run_id]
        for run_id in self._heartbeats.known():
            if run_id not in watched:  # finished (its objects went with the finish)
                self._heartbeats.forget(run_id)

    def _check_pending(self, run: RunRecord, waited: float) -> None:
        if waited > self._attach_timeout:
            self._runs.fail(
                run.run_id,
                f"no flwr-serverapp process attached within {self._attach_timeout:g} s "
                "(isolation process)",
            )
        else:
            self._runs.note(run, WAITING)
