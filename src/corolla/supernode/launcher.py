"""Isolation `subprocess`: the SuperNode starts, watches, stops and reaps `flwr-clientapp`.

One warm process per active run serves all that run's messages on this node. The app token goes
to the child in its environment, never on the command line. A watcher thread per process reaps
it and reports its exit; `stop` asks the process to finish, then SIGTERM, then SIGKILL.

With a `SparePool` (`clientapp_spares`, on unless ``--no-spare-app-process``) a run's process
is the node's spare when one is ready: it is already imported, gets its token on its stdin
pipe, and from then on is watched, stopped and reaped like a process started for the run.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Callable

from corolla.common.appenv import app_environment
from corolla.common.appio import TOKEN_ENV
from corolla.common.spare import Guard, Spare, SparePool, start_spare
from corolla.common.tls import AppTls

log = logging.getLogger(__name__)

VOLUNTARY_EXIT = 1.0  # seconds a stopped app gets to exit by itself (its run is over)
TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
_POLL = 0.2

OnExit = Callable[["AppProcess", int], None]


def clientapp_command(address: str, tls: AppTls | None = None) -> list[str]:
    """``tls``: the CA and client certificate, by path (the child reads the files itself)."""
    return [
        sys.executable,
        "-m",
        "corolla.runtime.clientapp",
        "--clientappio-api-address",
        address,
        *(["--insecure"] if tls is None else tls.args()),
    ]


def clientapp_spares(
    address: str, tls: AppTls | None, app_env: tuple[str, ...], guard: Guard
) -> SparePool:
    """The node's spare `flwr-clientapp`: the command and environment of `AppProcess.spawn`
    without a token; ``guard`` reports a crash of the pool's thread to the node."""

    def start() -> Spare:
        env = app_environment(app_env, {"PYTHONUNBUFFERED": "1"})
        return Spare(start_spare(clientapp_command(address, tls), env))

    return SparePool(start, "ClientApp", guard=guard)


class AppProcess:
    """A running `flwr-clientapp`; ``on_exit(process, returncode)`` runs once it is reaped."""

    def __init__(self, run_id: int, popen: subprocess.Popen[bytes], on_exit: OnExit) -> None:
        self.run_id = run_id
        self._popen = popen
        self._on_exit = on_exit
        self._stop_requested = threading.Event()
        self.stopping = False
        self._thread = threading.Thread(
            target=self._watch, name=f"clientapp-{popen.pid}", daemon=True
        )

    @classmethod
    def spawn(
        cls,
        *,
        run_id: int,
        address: str,
        token: str,
        on_exit: OnExit,
        tls: AppTls | None = None,
        app_env: tuple[str, ...] = (),
        spares: SparePool | None = None,
    ) -> AppProcess:
        """The run's process: the spare of ``spares`` if one is ready, else a child started
        now; it is reaped and reported (``on_exit``) only after `watch`.

        Its environment: the allow-list of `corolla.common.appenv` and ``app_env`` (the
        operator's ``--app-env``), then its run token; never the AppIo secret."""
        spare = None if spares is None else spares.take({TOKEN_ENV: token})
        if spare is not None:
            log.info("run %d: the spare ClientApp process %d takes the run", run_id, spare.pid)
            return cls(run_id, spare.process, on_exit)
        env = app_environment(app_env, {"PYTHONUNBUFFERED": "1", TOKEN_ENV: token})
        popen = subprocess.Popen(
            clientapp_command(address, tls),
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C reaches the SuperNode, which stops us
        )
        process = cls(run_id, popen, on_exit)
        log.info("run %d: started ClientApp process %d", run_id, popen.pid)
        return process

    def watch(self) -> None:
        """Start the watcher thread (once the process is recorded where ``on_exit`` looks)."""
        self._thread.start()

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def alive(self) -> bool:
        return self._popen.poll() is None and self._thread.is_alive()

    def stop(self) -> None:
        """Ask for the process to end (escalating to SIGTERM, then SIGKILL); returns at once."""
        self.stopping = True
        self._stop_requested.set()

    def join(self, timeout: float) -> bool:
        """Wait until the process is reaped and reported; True if it was."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _watch(self) -> None:
        code: int | None = None
        while code is None:
            if self._stop_requested.is_set():
                code = self._terminate()
                break
            try:
                code = self._popen.wait(_POLL)
            except subprocess.TimeoutExpired:
                continue
        if code != 0:
            log.info(
                "run %d: ClientApp process %d exited with code %d", self.run_id, self.pid, code
            )
        self._on_exit(self, code)

    def _terminate(self) -> int:
        try:
            return self._popen.wait(VOLUNTARY_EXIT)
        except subprocess.TimeoutExpired:
            pass
        log.info("run %d: sending SIGTERM to ClientApp process %d", self.run_id, self.pid)
        self._popen.terminate()
        try:
            return self._popen.wait(TERM_GRACE)
        except subprocess.TimeoutExpired:
            log.warning(
                "run %d: ClientApp process %d ignored SIGTERM, killing", self.run_id, self.pid
            )
            self._popen.kill()
            return self._popen.wait(TERM_GRACE)
