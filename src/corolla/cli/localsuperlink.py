"""The local SuperLink `flwr` starts for simulation federations (the ones with no address).

A simulation run is a run like any other: it goes to a SuperLink, which runs it on a simulation
grid. For a federation without an ``address``, `flwr run` uses a SuperLink of its own on this
machine, started once and then shared by every later command:

- it serves plaintext on 127.0.0.1 only, on free ports (port 0);
- its state database, log and ready file live in ``$COROLLA_HOME/local-superlink/``
  (``state.db``, ``superlink.log``, ``superlink.ready.json`` with its pid and addresses);
- it is detached (its own session), so it outlives the `flwr` that started it, and it exits
  by itself after `IDLE_TIMEOUT` with no unfinished run and no Exec call (``--idle-timeout``);
  to stop it sooner, `flwr local stop` (`stop_local_superlink`) sends SIGTERM to the pid in its
  ready file (unfinished runs go back to pending and resume when it starts again).

`ensure_local_superlink` (for `flwr run`) reuses a live one or starts one; `running_local_superlink`
(for `flwr ls/log/stop`) only looks. A lock file (``superlink.lock``, `fcntl.flock`) makes two
concurrent `flwr run` start one SuperLink between them. Readiness comes from the ready file,
never from the log.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from corolla.cli.exec_client import ExecClient
from corolla.common.config import read_ready_file
from corolla.common.errors import CorollaError, DeadlineExceeded, InvalidArgument, Unavailable
from corolla.common.paths import corolla_home

IDLE_TIMEOUT = 900.0  # seconds without a run or an Exec call before it exits
START_TIMEOUT = 30.0  # seconds for a new one to write its ready file
LOCK_TIMEOUT = 60.0  # seconds to wait for another `flwr` starting one
PROBE_TIMEOUT = 3.0  # seconds for a live one's Exec API to answer
STOP_TIMEOUT = 30.0  # seconds for it to shut down gracefully after SIGTERM
LOG_TAIL = 2000  # characters of its log shown when it does not come up
READY_FILE = "superlink.ready.json"
LOG_FILE = "superlink.log"
LOCK_FILE = "superlink.lock"
DATABASE = "state.db"
# The SuperLinks this process started, kept (not reaped: they outlive it) so that no Popen is
# collected while its child runs; tests reap them from here.
STARTED: list[subprocess.Popen[bytes]] = []


@dataclass(frozen=True)
class LocalSuperLink:
    """A running local SuperLink: its pid and where its Exec API listens."""

    pid: int
    exec_address: str


def local_superlink_dir() -> Path:
    """``$COROLLA_HOME/local-superlink`` (``~/.corolla/local-superlink``)."""
    return corolla_home() / "local-superlink"


def running_local_superlink(directory: Path | None = None) -> LocalSuperLink | None:
    """The local SuperLink if one is alive: its ready file names a live pid AND its Exec API
    answers. A missing, unreadable or stale ready file is None (nothing is started)."""
    directory = local_superlink_dir() if directory is None else directory
    try:
        ready = read_ready_file(directory / READY_FILE)
    except InvalidArgument:
        return None
    if ready is None:
        return None
    pid, address = ready.get("pid"), ready.get("exec")
    if not isinstance(pid, int) or isinstance(pid, bool) or not isinstance(address, str):
        return None
    if not _pid_alive(pid) or not _exec_answers(address):
        return None
    return LocalSuperLink(pid, address)


def ensure_local_superlink(
    directory: Path | None = None, *, idle_timeout: float = IDLE_TIMEOUT
) -> str:
    """The Exec address of the local SuperLink: the live one, else a new one (one line on
    stderr says so). Raises `Unavailable` with its log tail if a new one does not come up."""
    directory = local_superlink_dir() if directory is None else directory
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory / LOCK_FILE):
        running = running_local_superlink(directory)
        if running is not None:
            return running.exec_address
        started = _start(directory, idle_timeout)
    print(
        f"Started a local SuperLink for simulations (Exec {started.exec_address}; logs: "
        f"{directory / LOG_FILE}; it exits after {_minutes(idle_timeout)} idle)",
        file=sys.stderr,
        flush=True,
    )
    return started.exec_address


def stop_local_superlink(directory: Path | None = None) -> LocalSuperLink | None:
    """SIGTERM the running local SuperLink and wait until it has exited; None if none runs.
    Raises `DeadlineExceeded` if it is still running after STOP_TIMEOUT."""
    directory = local_superlink_dir() if directory is None else directory
    running = running_local_superlink(directory)
    if running is None:
        return None
    os.kill(running.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _pid_alive(running.pid):
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(
                f"the local SuperLink (pid {running.pid}) is still running "
                f"{STOP_TIMEOUT:.0f} s after SIGTERM (log: {directory / LOG_FILE})"
            )
        time.sleep(0.05)
    return running


def _start(directory: Path, idle_timeout: float) -> LocalSuperLink:
    """Start a detached SuperLink and wait for its ready file (the caller holds the lock)."""
    ready_path, log_path = directory / READY_FILE, directory / LOG_FILE
    ready_path.unlink(missing_ok=True)  # stale: its process is gone or does not answer
    args = [
        sys.executable,
        "-m",
        "corolla.superlink.main",
        "--insecure",
        "--database",
        str(directory / DATABASE),
        "--serverappio-api-address",
        "127.0.0.1:0",
        "--fleet-api-address",
        "127.0.0.1:0",
        "--exec-api-address",
        "127.0.0.1:0",
        "--idle-timeout",
        f"{idle_timeout:g}",
        "--ready-file",
        str(ready_path),
    ]
    with log_path.open("ab") as log:
        # Detached on purpose: it outlives this `flwr` and ends on its idle timeout. The lock's
        # descriptor is not inherited (close_fds), so the lock ends with this process.
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    STARTED.append(process)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        ready = read_ready_file(ready_path)
        if ready is not None and ready.get("pid") == process.pid:
            return LocalSuperLink(process.pid, str(ready["exec"]))
        code = process.poll()
        if code is not None:
            raise Unavailable(
                f"the local SuperLink exited with code {code} before it was ready "
                f"(log: {log_path}):\n{_tail(log_path)}"
            )
        time.sleep(0.05)
    process.terminate()  # ours, and of no use: reap it rather than leave it half started
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    raise DeadlineExceeded(
        f"the local SuperLink was not ready after {START_TIMEOUT:.0f} s "
        f"(log: {log_path}):\n{_tail(log_path)}"
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on ``path``; waits at most LOCK_TIMEOUT for another holder."""
    with path.open("a") as lock:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DeadlineExceeded(
                        f"another flwr has held {path} for {LOCK_TIMEOUT:.0f} s "
                        "(starting the local SuperLink)"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) counts as ended."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now: not our SuperLink
        return False
    for process in STARTED:  # our own child: reap it if it has exited
        if process.pid == pid:
            return process.poll() is None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all there is
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _exec_answers(address: str) -> bool:
    """True if an Exec API at ``address`` answers a call (which also counts as activity, so a
    SuperLink just found alive does not idle out before the caller uses it)."""
    client = ExecClient(
        address, insecure=True, connect_timeout=PROBE_TIMEOUT, call_timeout=PROBE_TIMEOUT
    )
    try:
        with client:
            client.list_runs()
    except CorollaError:
        return False
    return True


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL:]
    except OSError:
        return ""


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
