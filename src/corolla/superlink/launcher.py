"""Isolation ``subprocess``: start one flwr-serverapp process per run, at most N at once.

Each tick looks only at the active runs (an index, so finished runs cost nothing): it reaps
processes that exited (a run left unfinished resumes from its checkpoint or fails with how the
process ended and its last output), ends processes of runs that finished (stopped), fails runs
stuck starting, watches runs served by a process a previous SuperLink started (their
heartbeats), starts queued runs in order while there is room, and tells the others their place
in the queue. An error in a tick is logged with its traceback and the next tick goes on.

With ``spare=True`` (the SuperLink's default, off with ``--no-spare-app-process``) a spare
flwr-serverapp waits, imported, for the next run (`corolla.common.spare`): a run started while
it is ready gets it (the token on its stdin) instead of a fresh process. Its output goes to a
``serverapp-spare-*.log`` file that is renamed to the run's ``serverapp-<run_id>.log`` when it
is taken (its open descriptor writes on), so a crash's last output is found as for any run.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from corolla.common.appenv import app_environment
from corolla.common.appio import TOKEN_ENV
from corolla.common.errors import CorollaError
from corolla.common.spare import Spare, SparePool, start_spare
from corolla.common.tls import AppTls
from corolla.fab.limits import FabLimits
from corolla.superlink._worker import serve_ticks
from corolla.superlink.heartbeats import AppHeartbeats
from corolla.superlink.runs import Runs, queued_details
from corolla.superlink.state import RunRecord, RunStatus

log = logging.getLogger(__name__)

TAIL_LINES = 15
TERMINATE_GRACE = 5.0
START_TIMEOUT = 120.0
SHUTDOWN_REASON = "the SuperLink shut down while the run was in progress"
OUTPUT_DIR_MODE = 0o700
OUTPUT_FILE_MODE = 0o600
SPARE_PREFIX = "serverapp-spare-"


@dataclass
class _AppProcess:
    run_id: int
    process: subprocess.Popen[bytes]
    output: Path
    started: float  # launcher clock


def describe_exit(code: int) -> str:
    """``exited with code 3`` / ``was killed by signal SIGKILL``."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"was killed by signal {name}"
    return f"exited with code {code}"


def _open_output(path: Path) -> BinaryIO:
    """Append to ``path``, created 0600 (an existing file is tightened to 0600 too)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, OUTPUT_FILE_MODE)
    try:
        os.fchmod(fd, OUTPUT_FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab")


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        with path.open("rb") as file:
            return "\n".join(
                raw.decode("utf-8", "replace").rstrip()
                for raw in collections.deque(file, maxlen=lines)
            )
    except OSError:
        return ""


class ServerAppLauncher:
    def __init__(
        self,
        runs: Runs,
        serverappio_address: str,
        heartbeats: AppHeartbeats,
        output_dir: Path,
        *,
        max_concurrent: int = 2,
        start_timeout: float = START_TIMEOUT,
        heartbeat_timeout: float = 15.0,
        poll: float = 0.5,
        command: list[str] | None = None,
        tls: AppTls | None = None,
        clock: Callable[[], float] = time.monotonic,
        app_env: tuple[str, ...] = (),
        fab_limits: FabLimits | None = None,
        spare: bool = False,
    ) -> None:
        self._runs = runs
        self._state = runs.state
        self._heartbeats = heartbeats
        self._output_dir = output_dir
        self._max = max_concurrent
        self._start_timeout = start_timeout
        self._heartbeat_timeout = heartbeat_timeout
        self._clock = clock
        self._app_env = app_env  # the operator's --app-env, besides the allow-list
        # The child installs the FAB with the limits it was accepted with.
        self._fab_env = (fab_limits or FabLimits()).to_env()
        self._command = command or [sys.executable, "-m", "corolla.runtime.serverapp"]
        # TLS material by path (the child reads the files): no key on a command line.
        self._transport = ["--insecure"] if tls is None else tls.args()
        self._address = serverappio_address
        self._poll = poll
        self._procs: dict[int, _AppProcess] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="serverapp-launcher", daemon=True)
        self._error: BaseException | None = None
        self._spares = SparePool(self._start_spare, "ServerApp", guard=self._guarded_spares)
        self._use_spare = spare
        self._spare_error: BaseException | None = None

    @property
    def error(self) -> BaseException | None:
        """Why the launcher (or its spare-keeping thread) cannot go on; None while it can."""
        return self._error or self._spare_error

    def start(self) -> None:
        """Start the launcher thread (and the spare); the output directory is the SuperLink
        user's alone (0700, its files 0600: a ServerApp's output may hold anything the app
        printed)."""
        self._output_dir.mkdir(mode=OUTPUT_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(self._output_dir, OUTPUT_DIR_MODE)
        for stale in self._output_dir.glob(f"{SPARE_PREFIX}*.log"):  # a crashed SuperLink's
            with contextlib.suppress(OSError):
                stale.unlink()
        self._thread.start()
        if self._use_spare:
            self._spares.start()

    def notify(self) -> None:
        """Something changed (a run was submitted or stopped): look now."""
        self._wake.set()

    def stop(self) -> None:
        """End every ServerApp process (reaped); their runs go back to the queue, resumable."""
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=TERMINATE_GRACE + 5)
        self._spares.close()
        for app in list(self._procs.values()):
            self._terminate(app)
            with contextlib.suppress(CorollaError):
                if self._state.get_run(app.run_id).status != RunStatus.FINISHED:
                    self._runs.requeue(app.run_id, SHUTDOWN_REASON)
        self._procs.clear()

    def _loop(self) -> None:
        def stopped() -> bool:
            self._wake.wait(self._poll)
            self._wake.clear()
            return self._stop.is_set()

        self._error = serve_ticks("the ServerApp launcher", self.tick, stopped)

    def tick(self) -> None:
        active = {run.run_id: run for run in self._state.active_runs()}
        for run_id in list(self._procs):
            self._guarded(run_id, self._check_process, run_id, active.get(run_id))
        serving = len(self._procs)
        pending: list[RunRecord] = []
        for run in active.values():
            if run.status == RunStatus.PENDING:
                pending.append(run)
            elif run.run_id not in self._procs and self._guarded(
                run.run_id, self._check_adopted, run
            ):  # served by a process an earlier SuperLink started
                serving += 1
        free = max(0, self._max - serving)
        for position, run in enumerate(pending):
            if position < free:
                self._guarded(run.run_id, self._launch, run.run_id)
            else:
                self._guarded(run.run_id, self._runs.note, run, queued_details(position - free))

    def _guarded(self, run_id: int, step: Callable[..., bool | None], *args: Any) -> bool:
        """Run one step for one run; an error there is logged and does not stop the others."""
        try:
            return bool(step(*args))
        except CorollaError as exc:
            log.info("run %d: %s", run_id, exc)
        except Exception:
            log.exception("run %d: unexpected error in the launcher", run_id)
        return False

    def _check_process(self, run_id: int, run: RunRecord | None) -> bool:
        app = self._procs[run_id]
        code = app.process.poll()
        if code is None and run is None:  # finished (e.g. stopped by its user)
            self._terminate(app)
            self._forget(app)
            return True
        if code is None:
            waited = self._clock() - app.started
            if (
                run is not None
                and run.status == RunStatus.STARTING
                and waited > self._start_timeout
            ):
                self._terminate(app)
                self._forget(app)
                self._runs.fail(
                    run_id,
                    f"ServerApp process did not start the run within {self._start_timeout:g} s",
                )
            return True
        output = tail(app.output)
        self._forget(app)
        if run is not None:  # it ended without reporting how the run went
            reason = f"ServerApp process {describe_exit(code)} before finishing the run"
            self._runs.lost_app(run_id, f"{reason}\n{output}" if output else reason)
        return True

    def _check_adopted(self, run: RunRecord) -> bool:
        """True while the run's process (started before a SuperLink restart) sends heartbeats."""
        age = self._heartbeats.age(run.run_id)
        if age is None:
            self._heartbeats.beat(run.run_id)  # give it one timeout to show up
            return True
        if age <= self._heartbeat_timeout:
            return True
        self._heartbeats.forget(run.run_id)
        self._runs.lost_app(
            run.run_id, f"the ServerApp process sent no heartbeat for {age:.0f} s (lost)"
        )
        return False

    def _launch(self, run_id: int) -> bool:
        if not self._runs.start(run_id):
            return False
        token = self._state.create_token(run_id)
        output = self._output_dir / f"serverapp-{run_id}.log"
        spare = self._spares.take({TOKEN_ENV: token}) if self._use_spare else None
        if spare is not None:
            assert spare.output is not None  # `_start_spare` gives each its file
            try:
                os.replace(spare.output, output)  # its open descriptor writes on
            except OSError as exc:
                log.warning("run %d: cannot rename %s: %s", run_id, spare.output, exc)
                output = spare.output
            process = spare.process
            log.info("run %d: the spare flwr-serverapp (pid %d) takes the run", run_id, spare.pid)
        else:
            env = self._environment({TOKEN_ENV: token})
            try:
                with _open_output(output) as sink:
                    process = subprocess.Popen(
                        self._app_command(),
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
            except OSError as exc:
                self._runs.fail(run_id, f"cannot start flwr-serverapp: {exc}")
                return False
            log.info("run %d: started flwr-serverapp (pid %d)", run_id, process.pid)
        self._procs[run_id] = _AppProcess(run_id, process, output, self._clock())
        return True

    def _app_command(self) -> list[str]:
        return [*self._command, "--serverappio-api-address", self._address, *self._transport]

    def _environment(self, explicit: dict[str, str]) -> dict[str, str]:
        """An app process's environment: the allow-list, --app-env, the FAB limits, then
        ``explicit``."""
        return app_environment(
            self._app_env, {**self._fab_env, "PYTHONUNBUFFERED": "1", **explicit}
        )

    def _start_spare(self) -> Spare:
        """A spare: the command and environment of a run's process but its token; its output
        to a new private file in the output directory (renamed when a run takes it)."""
        fd, name = tempfile.mkstemp(prefix=SPARE_PREFIX, suffix=".log", dir=self._output_dir)
        path = Path(name)
        try:
            with os.fdopen(fd, "ab") as sink:  # mkstemp: 0600, O_EXCL
                process = start_spare(self._app_command(), self._environment({}), output=sink)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return Spare(process, path)

    def _guarded_spares(self, keep: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                keep()
            except BaseException as exc:
                log.exception("the spare flwr-serverapp thread failed")
                self._spare_error = exc

        return run

    def _forget(self, app: _AppProcess) -> None:
        del self._procs[app.run_id]
        with contextlib.suppress(OSError):
            app.output.unlink()

    def _terminate(self, app: _AppProcess) -> None:
        if app.process.poll() is None:
            app.process.terminate()
            try:
                app.process.wait(timeout=TERMINATE_GRACE)
            except subprocess.TimeoutExpired:
                app.process.kill()
                app.process.wait(timeout=TERMINATE_GRACE)
            log.info("run %d: flwr-serverapp (pid %d) stopped", app.run_id, app.process.pid)
