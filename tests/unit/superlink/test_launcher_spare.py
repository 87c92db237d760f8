"""ServerAppLauncher with a spare: the run's process is the spare that was ready, with the
run's token, environment and output file; a new spare follows; everything is reaped on stop.
Real child processes (a fake flwr-serverapp that speaks the spare's side for real)."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for

from corolla.common.appio import SECRET_ENV, TOKEN_ENV
from corolla.common.spare import STANDBY_ENV
from corolla.fab import FabLimits
from corolla.superlink.heartbeats import AppHeartbeats
from corolla.superlink.launcher import SPARE_PREFIX, ServerAppLauncher
from corolla.superlink.runs import Runs
from corolla.superlink.state import LinkState, RunStatus, SubStatus

pytestmark = pytest.mark.timeout(90)

# Prints before and during its run, writes down its environment; then sleeps or crashes.
SPARE = """
import json, os, sys, time
from pathlib import Path
print("waiting as a spare", flush=True)
from corolla.runtime.standby import await_run
await_run("fake-serverapp", ())
print("serving its run", flush=True)
out = Path(sys.argv[1])
tmp = out / f"{os.getpid()}.tmp"
tmp.write_text(json.dumps(dict(os.environ)))
tmp.rename(out / f"{os.getpid()}.json")
if sys.argv[2] == "crash":
    print("boom in the run", flush=True)
    sys.exit(3)
time.sleep(60)
"""


def new_run(state: LinkState) -> int:
    state.store_fab("f" * 64, b"fab")
    return state.create_run(
        fab_id="p/app", fab_version="1", fab_hash="f" * 64, override_config={}, run_config={}
    )


class Setup:
    def __init__(self, state: LinkState, tmp: Path) -> None:
        self.state = state
        self.seen = tmp / "seen"
        self.seen.mkdir()
        self.out = tmp / "out"
        self.launchers: list[ServerAppLauncher] = []

    def launcher(self, mode: str = "sleep", **kwargs: Any) -> ServerAppLauncher:
        launcher = ServerAppLauncher(
            Runs(self.state),
            "127.0.0.1:1",
            AppHeartbeats(),
            self.out,
            command=[sys.executable, "-c", SPARE, str(self.seen), mode],
            spare=True,
            **kwargs,
        )
        self.launchers.append(launcher)
        return launcher

    def env_of(self, pid: int) -> dict[str, str]:
        path = self.seen / f"{pid}.json"
        wait_for(f"process {pid} to serve a run", path.exists)
        return dict(json.loads(path.read_text()))


@pytest.fixture
def setup(state: LinkState, tmp_path: Path) -> Iterator[Setup]:
    made = Setup(state, tmp_path)
    yield made
    for launcher in made.launchers:
        launcher.stop()


def spare_pid(launcher: ServerAppLauncher) -> int:
    return int(wait_for("a spare flwr-serverapp", lambda: launcher._spares.pid))


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_run_gets_the_spare_with_its_token_environment_and_output_file(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv(SECRET_ENV, "s" * 32)
    monkeypatch.setenv("PROBE_PASSED", "yes")
    monkeypatch.setenv("PROBE_BLOCKED", "no")
    launcher = setup.launcher(app_env=("PROBE_PASSED",), fab_limits=FabLimits(max_entries=7))
    launcher.start()
    first = spare_pid(launcher)
    (waiting,) = setup.out.glob(f"{SPARE_PREFIX}*.log")  # its own private file meanwhile
    assert stat.S_IMODE(waiting.stat().st_mode) == 0o600
    wait_for("the spare's first line", lambda: "waiting as a spare" in waiting.read_text())

    run_id = new_run(setup.state)
    launcher.notify()
    env = setup.env_of(first)  # the spare that was ready serves the run
    assert setup.state.run_id_for_token(env[TOKEN_ENV]) == run_id
    assert env["PATH"] and env["PROBE_PASSED"] == "yes" and env["PYTHONUNBUFFERED"] == "1"
    assert env["COROLLA_MAX_FAB_ENTRIES"] == "7"  # as a process started for the run gets
    for name in ("AWS_SECRET_ACCESS_KEY", SECRET_ENV, "PROBE_BLOCKED", STANDBY_ENV):
        assert name not in env
    assert launcher._procs[run_id].process.pid == first

    output = setup.out / f"serverapp-{run_id}.log"  # renamed: the crash-reason tail finds it
    wait_for("its run's output", lambda: "serving its run" in output.read_text())
    assert output.read_text().startswith("waiting as a spare\n")  # one file, before and after
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert launcher._procs[run_id].output == output

    second = wait_for(
        "the next spare", lambda: (pid := launcher._spares.pid) not in (None, first) and pid
    )
    launcher.stop()
    assert not alive(first) and not alive(second)  # both ended and reaped
    assert not list(setup.out.glob(f"{SPARE_PREFIX}*.log"))  # the unused spare's file too
    assert setup.state.get_run(run_id).status == RunStatus.PENDING  # resumable, as before


def test_a_spare_that_crashes_in_its_run_fails_it_with_its_last_output(setup: Setup) -> None:
    launcher = setup.launcher(mode="crash")
    launcher.start()
    first = spare_pid(launcher)
    run_id = new_run(setup.state)
    launcher.notify()
    wait_for("the run to fail", lambda: setup.state.get_run(run_id).status == RunStatus.FINISHED)
    run = setup.state.get_run(run_id)
    assert setup.env_of(first)  # it was the spare
    assert run.sub_status == SubStatus.FAILED
    assert run.details.startswith("ServerApp process exited with code 3 before finishing")
    assert "boom in the run" in run.details  # the tail of the renamed output file
    assert not (setup.out / f"serverapp-{run_id}.log").exists()  # forgotten as any run's


def test_without_a_ready_spare_a_run_gets_a_fresh_process(setup: Setup) -> None:
    launcher = setup.launcher()
    launcher.start()
    first = spare_pid(launcher)
    runs = [new_run(setup.state), new_run(setup.state)]
    launcher.notify()  # two runs, one spare: the other starts fresh, with its token in its env
    pids = [wait_for(f"run {r}'s process", lambda r=r: r in launcher._procs) for r in runs]
    assert all(pids)
    served = {r: launcher._procs[r].process.pid for r in runs}
    assert first in served.values()
    for run_id, pid in served.items():
        env = setup.env_of(pid)
        assert setup.state.run_id_for_token(env[TOKEN_ENV]) == run_id


def test_the_files_of_a_crashed_superlinks_spares_are_removed(setup: Setup) -> None:
    setup.out.mkdir(mode=0o700)
    stale = setup.out / f"{SPARE_PREFIX}old.log"
    stale.write_text("from a SuperLink that was killed\n")
    launcher = setup.launcher()
    launcher.start()
    spare_pid(launcher)
    assert not stale.exists()
    assert len(list(setup.out.glob(f"{SPARE_PREFIX}*.log"))) == 1  # the new spare's
