"""A spare app process per daemon: started ahead of need, handed one run, replaced.

Starting `flwr-serverapp` / `flwr-clientapp` costs an interpreter and its imports (most of a
second), which a run's first round would otherwise wait for. A daemon in isolation
``subprocess`` keeps ONE spare: the same command and allow-listed environment as a real app
process, minus the run's token, plus ``COROLLA_APP_STANDBY=1`` (not a secret) and a pipe on
its stdin. The spare imports what an app process imports, then blocks reading one line from
the pipe (`corolla.runtime.standby`): its assignment, ``{"env": {NAME: VALUE}}`` (the run
token and anything else per run that a fresh process would get in its environment). It
applies it and goes on exactly as a process started for that run; EOF instead (the daemon
dropped it or died) ends it with code 0.

`SparePool.take` hands the current spare its assignment and returns it: from then on it is
the caller's child like any freshly started one (watched, reaped, stopped as one); the pool
starts the next spare at once, in its own thread and without holding a lock. A spare serves
one run and exits after it, so one run's modules never meet another's. ``take`` returns None
when no spare is there (being started, just died, closed): the caller starts a fresh process.
A spare that dies by itself is replaced after a capped backoff (`corolla.common.backoff`),
so a broken environment does not fork in a loop. `close` ends the spare (SIGTERM, then
SIGKILL after a grace period) and reaps it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from corolla.common.backoff import Backoff
from corolla.common.errors import InvalidArgument

log = logging.getLogger(__name__)

STANDBY_ENV = "COROLLA_APP_STANDBY"
"""Set to ``1`` in a spare's environment: wait for the assignment on stdin first."""
MAX_ASSIGNMENT_BYTES = 64 * 1024
POLL = 0.5  # seconds between checks that the spare is still alive
GRACE = 5.0  # seconds between SIGTERM and SIGKILL
BACKOFF_INITIAL = 0.5
BACKOFF_CAP = 30.0  # longest pause before replacing a spare that died by itself
_TAIL_LINES = 10

Guard = Callable[[Callable[[], None]], Callable[[], None]]


def encode_assignment(env: Mapping[str, str]) -> bytes:
    """The one line a spare reads: ``{"env": {...}}`` and a newline."""
    line = json.dumps({"env": dict(env)}, separators=(",", ":")).encode() + b"\n"
    if len(line) > MAX_ASSIGNMENT_BYTES:
        raise InvalidArgument(f"a spare's assignment is limited to {MAX_ASSIGNMENT_BYTES} bytes")
    return line


def decode_assignment(line: bytes) -> dict[str, str]:
    """The environment an assignment line sets; `InvalidArgument` if it is not one."""
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(f"the assignment is not JSON: {exc}") from exc
    env = data.get("env") if isinstance(data, dict) else None
    if not isinstance(env, dict) or not all(
        isinstance(name, str) and name and isinstance(value, str) for name, value in env.items()
    ):
        raise InvalidArgument('the assignment must be {"env": {"NAME": "value", ...}}')
    return env


@dataclass
class Spare:
    """A started spare; ``output``: the file its stdout and stderr go to, if any."""

    process: subprocess.Popen[bytes]
    output: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid


def start_spare(
    command: Sequence[str],
    env: Mapping[str, str],
    *,
    output: IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` as a spare: ``env`` (an app process's, without its token) plus
    `STANDBY_ENV`, stdin a pipe, its own session (a terminal's Ctrl-C reaches the daemon,
    which ends it); stdout and stderr to ``output`` if given, else the daemon's."""
    return subprocess.Popen(
        list(command),
        env={**env, STANDBY_ENV: "1"},
        stdin=subprocess.PIPE,
        stdout=output,
        stderr=None if output is None else subprocess.STDOUT,
        start_new_session=True,
    )


def _unguarded(target: Callable[[], None]) -> Callable[[], None]:
    return target


class SparePool:
    """Keeps one spare ready: the ``start`` callable makes one (with `start_spare`), the
    pool's thread (`start`) makes the first and each replacement."""

    def __init__(
        self,
        start: Callable[[], Spare],
        name: str,
        *,
        guard: Guard = _unguarded,
        poll: float = POLL,
        grace: float = GRACE,
        backoff: Backoff | None = None,
    ) -> None:
        self._start = start
        self._name = name  # "ClientApp" / "ServerApp", for the log
        self._poll = poll
        self._grace = grace
        self._backoff = backoff or Backoff(initial=BACKOFF_INITIAL, cap=BACKOFF_CAP)
        self._lock = threading.Lock()  # guards _spare, _delay and _backoff; never held long
        self._spare: Spare | None = None
        self._delay = 0.0  # before the next start: a spare died by itself
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=guard(self._keep), name=f"spare-{name.lower()}", daemon=True
        )

    def start(self) -> None:
        """Start the first spare, and keep one, in the pool's thread."""
        self._thread.start()

    @property
    def pid(self) -> int | None:
        """The current spare's pid (None while there is none)."""
        with self._lock:
            return None if self._spare is None else self._spare.pid

    def take(self, env: Mapping[str, str]) -> Spare | None:
        """Hand the spare its assignment (``env``: what its run sets in its environment) and
        return it, now the caller's to watch and reap; None if no spare is ready."""
        line = encode_assignment(env)
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is None:
            return None
        self._wake.set()  # the next spare starts now
        stdin = spare.process.stdin
        assert stdin is not None  # started with stdin=PIPE
        try:
            if spare.process.poll() is None:
                stdin.write(line)
                stdin.close()  # one run only: EOF after the assignment
                with self._lock:
                    self._backoff.reset()
                return spare
        except OSError as exc:  # it died a moment ago (EPIPE)
            log.info("the spare %s process %d is gone (%s)", self._name, spare.pid, exc)
        self._died(spare)
        return None

    def close(self) -> None:
        """End and reap the spare (and one being started); ``take`` returns None from now."""
        self._closed.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=2 * self._grace + 5)
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            self._end(spare)

    # -- the pool's thread ------------------------------------------------------------------------

    def _keep(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                spare, delay = self._spare, self._delay
            if spare is None:
                if delay > 0 and self._closed.wait(delay):
                    break
                self._replace()
                continue
            self._wake.wait(self._poll)
            self._wake.clear()
            with self._lock:
                dead = self._spare is spare and spare.process.poll() is not None
                if dead:
                    self._spare = None
            if dead:
                self._died(spare)

    def _replace(self) -> None:
        with self._lock:
            self._delay = 0.0
        try:
            spare = self._start()  # no lock is held while the child starts
        except OSError as exc:  # e.g. out of processes: try again later
            delay = self._next_delay()
            log.warning(
                "cannot start a spare %s process: %s; next attempt in %.1f s",
                self._name,
                exc,
                delay,
            )
            return
        with self._lock:
            keep = not self._closed.is_set()
            if keep:
                self._spare = spare
        if not keep:  # closed while it started
            self._end(spare)
            return
        log.debug("spare %s process %d started", self._name, spare.pid)

    def _next_delay(self) -> float:
        with self._lock:
            self._delay = self._backoff.next_delay()
            return self._delay

    def _died(self, spare: Spare) -> None:
        """A spare exited before it was taken: reap it, say why, replace it after a pause."""
        try:
            code = spare.process.wait(timeout=self._grace)  # it has exited: returns at once
        except subprocess.TimeoutExpired:  # closed its stdin but lives on: end it
            self._end(spare)
            code = spare.process.returncode
        delay = self._next_delay()
        tail = _tail(spare.output)
        log.warning(
            "the spare %s process %d exited with code %d before a run needed it; "
            "a new one in %.1f s%s",
            self._name,
            spare.pid,
            code,
            delay,
            f"; its last output:\n{tail}" if tail else "",
        )
        self._wake.set()
        self._forget(spare)

    def _end(self, spare: Spare) -> None:
        """Stop a spare nobody took: EOF and SIGTERM, SIGKILL after the grace period."""
        process = spare.process
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self._grace)
            except subprocess.TimeoutExpired:
                log.warning("spare %s process %d ignored SIGTERM, killing", self._name, spare.pid)
                process.kill()
                process.wait(timeout=self._grace)
        self._forget(spare)

    def _forget(self, spare: Spare) -> None:
        if spare.process.stdin is not None:
            with contextlib.suppress(OSError):
                spare.process.stdin.close()
        if spare.output is not None:
            with contextlib.suppress(OSError):
                spare.output.unlink()


def _tail(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        with path.open("rb") as file:
            lines = collections.deque(file, maxlen=_TAIL_LINES)
    except OSError:
        return ""
    return "\n".join(raw.decode("utf-8", "replace").rstrip() for raw in lines)
