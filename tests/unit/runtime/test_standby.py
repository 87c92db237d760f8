"""The real flwr-serverapp / flwr-clientapp entry points started as spares: EOF ends them
quietly, a malformed assignment is one line and exit 2, and the parent's death ends them
(waiting: EOF; taken ClientApp: `exit_with_parent`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corolla.common.appenv import app_environment
from corolla.common.spare import start_spare

pytestmark = pytest.mark.timeout(90)

ENTRY_POINTS = {
    "flwr-serverapp": ["corolla.runtime.serverapp", "--serverappio-api-address"],
    "flwr-clientapp": ["corolla.runtime.clientapp", "--clientappio-api-address"],
}


def command(prog: str, address: str = "127.0.0.1:1") -> list[str]:
    module, flag = ENTRY_POINTS[prog]
    return [sys.executable, "-m", module, flag, address, "--insecure"]


def gone(pid: int) -> bool:
    """Not running (a zombie left for a reaper that is not ours counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_gone(pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.05)


@pytest.mark.parametrize("prog", sorted(ENTRY_POINTS))
def test_eof_instead_of_a_run_ends_a_spare_quietly(prog: str, tmp_path: Path) -> None:
    with (tmp_path / "out").open("wb") as out:
        process = start_spare(command(prog), app_environment(), output=out)
    assert process.stdin is not None
    process.stdin.close()  # the daemon dropped it (after its imports, or during them)
    assert process.wait(timeout=60) == 0
    assert (tmp_path / "out").read_bytes() == b""


@pytest.mark.parametrize("prog", sorted(ENTRY_POINTS))
def test_a_malformed_assignment_is_one_line_and_exit_2(prog: str, tmp_path: Path) -> None:
    with (tmp_path / "out").open("wb") as out:
        process = start_spare(command(prog), app_environment(), output=out)
    assert process.stdin is not None
    process.stdin.write(b"token=abc\n")
    process.stdin.close()
    assert process.wait(timeout=60) == 2
    assert (tmp_path / "out").read_text().startswith(f"{prog}: the assignment is not JSON")


# A daemon that starts a spare flwr-clientapp and dies: at once, or once the spare has taken
# the run it handed it (its stdin is /dev/null then).
DAEMON = """
import os, sys, time
from corolla.common.appenv import app_environment
from corolla.common.appio import TOKEN_ENV
from corolla.common.spare import encode_assignment, start_spare
process = start_spare(sys.argv[2:], app_environment(), output=sys.stderr.buffer)
if sys.argv[1] == "take":
    process.stdin.write(encode_assignment({TOKEN_ENV: "t"}))
    process.stdin.close()
    deadline = time.monotonic() + 60
    while os.readlink(f"/proc/{process.pid}/fd/0") != "/dev/null":
        assert time.monotonic() < deadline
        time.sleep(0.01)
print(process.pid, flush=True)
os._exit(0)
"""


def orphaned_spare(tmp_path: Path, take: bool, address: str) -> tuple[int, Path]:
    """The pid of a spare whose daemon died, and the file its output went to."""
    output = tmp_path / "out"
    spare = command("flwr-clientapp", address)
    with output.open("wb") as err:
        daemon = subprocess.run(
            [sys.executable, "-c", DAEMON, "take" if take else "wait", *spare],
            stdout=subprocess.PIPE,
            stderr=err,
            env=app_environment(),
            timeout=60,
            check=True,
        )
    return int(daemon.stdout), output


def test_a_waiting_spare_ends_with_its_daemon(tmp_path: Path) -> None:
    pid, output = orphaned_spare(tmp_path, take=False, address="127.0.0.1:1")
    wait_gone(pid)  # EOF on its stdin
    assert output.read_bytes() == b""  # quietly


def test_a_taken_clientapp_spare_ends_with_its_daemon(tmp_path: Path) -> None:
    # A "SuperNode" that accepts connections and never answers: the app process's calls hang,
    # only its parent watch can end it.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        pid, output = orphaned_spare(tmp_path, take=True, address=address)
        wait_gone(pid)
    assert "flwr-clientapp: parent process gone, exiting" in output.read_text()


# Imports the parent watch, says so, waits (as a spare waits for its run), then starts it.
LATE_WATCH = """
import sys, time
from pathlib import Path
from corolla.runtime.parent import exit_with_parent
imported, go = Path(sys.argv[1]), Path(sys.argv[2])
imported.touch()
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
exit_with_parent("probe")
time.sleep(60)
"""
# Starts it, and exits once it has imported the watch.
INTERMEDIATE = """
import subprocess, sys, time
from pathlib import Path
child = subprocess.Popen(
    [sys.executable, "-c", *sys.argv[1:]], stdout=subprocess.DEVNULL, start_new_session=True
)
deadline = time.monotonic() + 60
while not Path(sys.argv[2]).exists() and time.monotonic() < deadline:
    time.sleep(0.01)
print(child.pid, flush=True)
"""


def test_the_parent_watch_sees_a_parent_that_went_before_it_started(tmp_path: Path) -> None:
    imported, go, output = tmp_path / "imported", tmp_path / "go", tmp_path / "out"
    with output.open("wb") as err:
        daemon = subprocess.run(
            [sys.executable, "-c", INTERMEDIATE, LATE_WATCH, str(imported), str(go)],
            stdout=subprocess.PIPE,
            stderr=err,
            env=app_environment(),
            timeout=60,
            check=True,
        )
    pid = int(daemon.stdout)
    assert imported.exists()
    go.touch()  # its parent has exited (and been reaped): the watch starts after that
    try:
        wait_gone(pid, timeout=30)
    finally:
        if not gone(pid):  # a failure, but never left running
            os.kill(pid, signal.SIGKILL)
    assert "probe: parent process gone, exiting" in output.read_text()
