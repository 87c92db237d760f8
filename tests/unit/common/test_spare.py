"""SparePool with real child processes: started ahead, taken with an assignment, replaced,
backed off when it keeps dying, reaped on close; the token never on a command line."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from waiting import wait_for

from corolla.common.appenv import app_environment
from corolla.common.appio import TOKEN_ENV
from corolla.common.backoff import Backoff
from corolla.common.errors import InvalidArgument
from corolla.common.spare import (
    STANDBY_ENV,
    Spare,
    SparePool,
    decode_assignment,
    encode_assignment,
    start_spare,
)

pytestmark = pytest.mark.timeout(90)

# A spare that says what it got: its assignment applied, then it waits for `release`.
CHILD = """
import json, os, sys, time
from pathlib import Path
from corolla.runtime.standby import await_run
await_run("probe", ())
out = Path(sys.argv[1]) / f"{os.getpid()}.json"
seen = {
    "token": os.environ.get("COROLLA_APP_TOKEN"),
    "extra": os.environ.get("PROBE_EXTRA"),
    "standby": os.environ.get("COROLLA_APP_STANDBY"),
    "stdin": os.readlink("/proc/self/fd/0"),
    "ppid": os.getppid(),
}
tmp = out.with_suffix(".tmp")
tmp.write_text(json.dumps(seen))
tmp.rename(out)
deadline = time.monotonic() + 60
while not (Path(sys.argv[1]) / "release").exists() and time.monotonic() < deadline:
    time.sleep(0.02)
"""


class Recorder(Backoff):
    """The pool's backoff, with every delay it handed out."""

    def __init__(self, initial: float = 0.01, cap: float = 0.04) -> None:
        super().__init__(initial=initial, cap=cap, rng=lambda: 0.5)  # no jitter
        self.delays: list[float] = []

    def next_delay(self) -> float:
        delay = super().next_delay()
        self.delays.append(delay)
        return delay


class Pools:
    """Pools of the test and every spare they started; all closed and reaped at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[Spare] = []
        self.pools: list[SparePool] = []

    def command(self, script: str = CHILD) -> list[str]:
        return [sys.executable, "-c", script, str(self.tmp)]

    def starter(self, script: str = CHILD) -> Callable[[], Spare]:
        def start() -> Spare:
            spare = Spare(start_spare(self.command(script), app_environment()))
            self.started.append(spare)
            return spare

        return start

    def pool(self, start: Callable[[], Spare] | None = None, **kwargs: Any) -> SparePool:
        pool = SparePool(start or self.starter(), "Probe", poll=0.05, **kwargs)
        self.pools.append(pool)
        return pool

    def seen(self, pid: int) -> dict[str, Any]:
        path = self.tmp / f"{pid}.json"
        wait_for(f"process {pid} to report", path.exists)
        return dict(json.loads(path.read_text()))

    def release(self) -> None:
        (self.tmp / "release").touch()

    def close(self) -> None:
        self.release()
        for pool in self.pools:
            pool.close()
        for spare in self.started:  # taken ones are the test's to reap
            if spare.process.poll() is None:
                spare.process.kill()
            spare.process.wait(timeout=20)


@pytest.fixture
def pools(tmp_path: Path) -> Iterator[Pools]:
    made = Pools(tmp_path)
    yield made
    made.close()


def proc_bytes(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


def test_a_spare_is_ready_ahead_and_taken_with_its_assignment_then_replaced(
    pools: Pools,
) -> None:
    pool = pools.pool()
    pool.start()
    first = wait_for("the first spare", lambda: pool.pid)
    assert os.readlink(f"/proc/{first}/fd/0").startswith("pipe:")  # waiting on our pipe
    spare = pool.take({TOKEN_ENV: "token-of-run-1", "PROBE_EXTRA": "x"})
    assert spare is not None and spare.pid == first
    seen = pools.seen(first)
    assert seen == {
        "token": "token-of-run-1",
        "extra": "x",
        "standby": None,  # the switch is gone once the run is applied
        "stdin": "/dev/null",  # as for a process started for its run
        "ppid": os.getpid(),  # still our child: we reap it
    }
    second = wait_for("a new spare", lambda: pool.pid not in (None, first) and pool.pid)
    assert second != first
    assert not (pools.tmp / f"{second}.json").exists()  # it waits for its own run
    pools.release()
    assert spare.process.wait(timeout=30) == 0
    pool.close()
    assert pool.pid is None
    assert all(s.process.returncode is not None for s in pools.started)  # all reaped
    assert pool.take({TOKEN_ENV: "late"}) is None  # closed: the caller starts a fresh one


def test_the_token_is_never_on_a_command_line_nor_in_the_initial_environment(
    pools: Pools,
) -> None:
    token = "tok-5f1c9a7e-never-on-a-command-line"
    pool = pools.pool()
    pool.start()
    wait_for("a spare", lambda: pool.pid)
    spare = pool.take({TOKEN_ENV: token})
    assert spare is not None
    assert pools.seen(spare.pid)["token"] == token  # it has it, from the pipe
    wait_for("a new spare", lambda: pool.pid not in (None, spare.pid))
    for started in pools.started:
        assert token.encode() not in proc_bytes(started.pid, "cmdline")
        assert token.encode() not in proc_bytes(started.pid, "environ")
        assert f"{STANDBY_ENV}=1".encode() in proc_bytes(started.pid, "environ")


def test_no_spare_ready_means_none(pools: Pools) -> None:
    pool = pools.pool()
    assert pool.take({TOKEN_ENV: "t"}) is None  # not started
    pool.close()
    assert pool.take({TOKEN_ENV: "t"}) is None


def test_a_spare_that_dies_is_replaced_after_a_backoff_reset_by_a_take(
    pools: Pools, caplog: pytest.LogCaptureFixture
) -> None:
    backoff = Recorder()
    pool = pools.pool(backoff=backoff)
    pool.start()
    first = wait_for("a spare", lambda: pool.pid)
    with caplog.at_level(logging.WARNING, logger="corolla.common.spare"):
        os.kill(first, signal.SIGKILL)
        second = wait_for("its replacement", lambda: pool.pid not in (None, first) and pool.pid)
    assert pools.started[0].process.returncode == -signal.SIGKILL  # reaped by the pool
    assert backoff.delays == [0.01]  # the replacement waited one backoff delay
    assert f"spare Probe process {first} exited with code -9 before a run needed it" in (
        caplog.text
    )
    spare = pool.take({TOKEN_ENV: "t"})
    assert spare is not None and spare.pid == second
    assert backoff.attempts == 0  # a spare that served a run resets the backoff


def test_a_spare_that_keeps_dying_is_replaced_with_growing_capped_delays(
    pools: Pools,
) -> None:
    backoff = Recorder(initial=0.01, cap=0.04)
    pool = pools.pool(pools.starter("import sys; sys.exit(3)"), backoff=backoff)
    pool.start()
    wait_for("five dead spares", lambda: len(backoff.delays) >= 5)
    pool.close()
    assert backoff.delays[:5] == [0.01, 0.02, 0.04, 0.04, 0.04]  # one per death, capped
    assert all(s.process.returncode == 3 for s in pools.started)
    assert len(pools.started) in (len(backoff.delays), len(backoff.delays) + 1)


def test_a_failed_start_is_retried_after_a_backoff(
    pools: Pools, caplog: pytest.LogCaptureFixture
) -> None:
    backoff = Recorder()
    real = pools.starter()
    calls = []

    def start() -> Spare:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("Resource temporarily unavailable")
        return real()

    pool = pools.pool(start, backoff=backoff)
    with caplog.at_level(logging.WARNING, logger="corolla.common.spare"):
        pool.start()
        wait_for("a spare after the failed start", lambda: pool.pid)
    assert backoff.delays == [0.01]
    assert "cannot start a spare Probe process: Resource temporarily unavailable" in caplog.text


def test_close_reaps_a_spare_that_was_being_started(pools: Pools) -> None:
    go = threading.Event()
    real = pools.starter()

    def start() -> Spare:
        assert go.wait(30)
        return real()

    pool = pools.pool(start)
    pool.start()
    closer = threading.Thread(target=pool.close)
    closer.start()
    wait_for("close to begin", pool._closed.is_set)  # close() waits for the starting spare
    go.set()
    closer.join(timeout=30)
    assert not closer.is_alive()
    (spare,) = pools.started
    assert spare.process.returncode is not None  # ended and reaped before close returned
    assert pool.pid is None


def test_close_ends_a_spare_with_sigterm(pools: Pools) -> None:
    pool = pools.pool()
    pool.start()
    wait_for("a spare", lambda: pool.pid)
    pool.close()
    (spare,) = pools.started
    assert spare.process.returncode == -signal.SIGTERM


def test_a_spare_whose_assignment_cannot_be_written_is_not_handed_out(pools: Pools) -> None:
    pool = pools.pool(pools.starter("import os; os.close(0); import time; time.sleep(60)"))
    pool.start()
    pid = wait_for("a spare", lambda: pool.pid)
    wait_for("its stdin to close", lambda: not os.path.exists(f"/proc/{pid}/fd/0"))
    assert pool.take({TOKEN_ENV: "t"}) is None  # EPIPE: the caller starts a fresh process
    assert pools.started[0].process.returncode is not None  # ended and reaped by the pool


@given(st.dictionaries(st.text(min_size=1), st.text(), max_size=5))
def test_an_assignment_round_trips(env: dict[str, str]) -> None:
    line = encode_assignment(env)
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line, whatever the values
    assert decode_assignment(line.rstrip(b"\n")) == env


@pytest.mark.parametrize(
    "line",
    [b"", b"not json", b"[]", b'{"env": 1}', b'{"env": {"A": 1}}', b'{"env": {"": "x"}}', b"\xff"],
)
def test_a_malformed_assignment_is_refused(line: bytes) -> None:
    with pytest.raises(InvalidArgument):
        decode_assignment(line)


def test_an_oversized_assignment_is_refused_and_the_spare_kept(pools: Pools) -> None:
    with pytest.raises(InvalidArgument):
        encode_assignment({"BIG": "x" * (1 << 17)})
    pool = pools.pool()
    pool.start()
    pid = wait_for("a spare", lambda: pool.pid)
    with pytest.raises(InvalidArgument):
        pool.take({"BIG": "x" * (1 << 17)})
    assert pool.pid == pid  # still there for the next run


def test_start_spare_marks_the_child_gives_it_a_pipe_and_its_own_session(
    tmp_path: Path,
) -> None:
    script = (
        "import os, sys; print(os.environ['COROLLA_APP_STANDBY'], os.getsid(0) == os.getpid(), "
        "sys.stdin.read(), flush=True); print('to stderr', file=sys.stderr)"
    )
    with (tmp_path / "out").open("wb") as out:
        process = start_spare([sys.executable, "-c", script], app_environment(), output=out)
    assert process.stdin is not None
    process.stdin.write(b"hello")
    process.stdin.close()
    assert process.wait(timeout=30) == 0
    assert (tmp_path / "out").read_text() == "1 True hello\nto stderr\n"  # both streams
