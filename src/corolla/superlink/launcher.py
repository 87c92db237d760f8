"""Isolation ``subprocess``: start one flwr-serverapp process per run and watch it."""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from corolla.common.appio import TOKEN_ENV
from corolla.common.errors import CorollaError
from corolla.superlink.state import LinkState, RunStatus, SubStatus

log = logging.getLogger(__name__)

TAIL_LINES = 15
TERMINATE_GRACE = 5.0
START_TIMEOUT = 120.0


@dataclass
class _AppProcess:
    run_id: int
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=TAIL_LINES)
    )
    reader: threading.Thread | None = None


class ServerAppLauncher:
    """Starts pending runs, stops processes of runs that ended, fails runs whose process died."""

    def __init__(
        self,
        state: LinkState,
        serverappio_address: str,
        *,
        poll: float = 0.5,
        start_timeout: float = START_TIMEOUT,
        command: list[str] | None = None,
        root_certificates: Path | None = None,
    ) -> None:
        self._state = state
        self._start_timeout = start_timeout
        self._command = command or [sys.executable, "-m", "corolla.runtime.serverapp"]
        self._transport = (
            ["--insecure"]
            if root_certificates is None
            else ["--root-certificates", str(root_certificates)]
        )
        self._address = serverappio_address
        self._poll = poll
        self._procs: dict[int, _AppProcess] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="serverapp-launcher", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """Something changed (a run was submitted or stopped): look now."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=TERMINATE_GRACE + 5)
        for app in list(self._procs.values()):
            self._terminate(app)
        self._procs.clear()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.wait(self._poll)
                self._wake.clear()
                self._tick()
        except BaseException as exc:  # reaches main via .error; the daemon then exits non-zero
            log.exception("launcher crashed")
            self.error = exc

    def _tick(self) -> None:
        for run in self._state.list_runs():
            app = self._procs.get(run.run_id)
            if run.status == RunStatus.PENDING and app is None:
                self._launch(run.run_id)
            elif run.status == RunStatus.FINISHED and app is not None:
                self._terminate(app)
                del self._procs[run.run_id]
                self._state.delete_run_objects(run.run_id)
            elif (
                run.status == RunStatus.STARTING
                and app is not None
                and time.monotonic() - app.started > self._start_timeout
            ):
                self._finish(
                    run.run_id,
                    f"ServerApp process did not start the run within {self._start_timeout:.0f} s",
                )
                self._terminate(app)
                del self._procs[run.run_id]
        for run_id, app in list(self._procs.items()):
            code = app.process.poll()
            if code is None:
                continue
            if app.reader is not None:
                app.reader.join(timeout=2)
            del self._procs[run_id]
            run = self._state.get_run(run_id)
            if run.status != RunStatus.FINISHED:
                tail = "\n".join(app.tail)
                reason = f"ServerApp process exited with code {code} before finishing the run"
                self._finish(run_id, f"{reason}\n{tail}" if tail else reason)
            self._state.delete_run_objects(run_id)

    def _finish(self, run_id: int, reason: str) -> None:
        try:
            self._state.update_run_status(run_id, RunStatus.FINISHED, SubStatus.FAILED, reason)
            self._state.append_logs(run_id, [f"ERROR run failed: {reason}"])
        except CorollaError:
            log.debug("run %d finished concurrently", run_id)

    def _launch(self, run_id: int) -> None:
        token = self._state.create_token(run_id)
        self._state.update_run_status(run_id, RunStatus.STARTING)
        env = {**os.environ, TOKEN_ENV: token}
        command = [
            *self._command,
            "--serverappio-api-address",
            self._address,
            *self._transport,
        ]
        try:
            process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self._finish(run_id, f"cannot start flwr-serverapp: {exc}")
            return
        app = _AppProcess(run_id, process)
        app.reader = threading.Thread(target=_read_tail, args=(app,), daemon=True)
        app.reader.start()
        self._procs[run_id] = app
        log.info("run %d: started flwr-serverapp (pid %d)", run_id, process.pid)

    def _terminate(self, app: _AppProcess) -> None:
        if app.process.poll() is None:
            app.process.terminate()
            try:
                app.process.wait(timeout=TERMINATE_GRACE)
            except subprocess.TimeoutExpired:
                app.process.kill()
                app.process.wait(timeout=TERMINATE_GRACE)
            log.info("run %d: flwr-serverapp (pid %d) stopped", app.run_id, app.process.pid)
        if app.reader is not None:
            app.reader.join(timeout=2)


def _read_tail(app: _AppProcess) -> None:
    assert app.process.stdout is not None
    for raw in app.process.stdout:
        line = raw.decode("utf-8", "replace").rstrip()
        app.tail.append(line)
        log.debug("[run %d] %s", app.run_id, line)
