"""Issue 10 as a user meets it: ``flwr new my-app && cd my-app && flwr run . --stream`` on a
fresh install, with nothing else configured, runs a simulation on the local SuperLink that
`flwr` starts; ``flwr run . local-simulation --stream`` with 50 virtual SuperNodes too.

``FLWR_HOME`` and ``COROLLA_HOME`` are temporary directories. The fixture stops the local
SuperLink by the pid in its ready file, whatever happens, and checks that nothing is left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from integration_helpers import FLWR, alive

pytestmark = pytest.mark.timeout(300)


@dataclass
class User:
    """A fresh user: own FLWR_HOME and COROLLA_HOME, the flwr console script."""

    home: Path
    env: dict[str, str]

    @property
    def ready_file(self) -> Path:
        return self.home / "corolla" / "local-superlink" / "superlink.ready.json"

    def flwr(self, *args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FLWR), *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )


@pytest.fixture
def user(tmp_path: Path) -> Iterator[User]:
    if not FLWR.exists():
        pytest.skip("the flwr console script is not installed (pip install -e .)")
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("COROLLA_", "FLWR_"))
    }
    env.update(FLWR_HOME=str(tmp_path / "flwr"), COROLLA_HOME=str(tmp_path / "corolla"))
    user = User(tmp_path, env)
    pids: set[int] = set()
    try:
        yield user
    finally:
        if user.ready_file.exists():
            pids.add(int(json.loads(user.ready_file.read_text())["pid"]))
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGTERM)  # the SuperLink this test's flwr started
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not [pid for pid in pids if alive(pid)], "the local SuperLink is still running"
    assert not user.ready_file.exists(), "a stopped SuperLink removes its ready file"


def run_id_of(output: str) -> int:
    match = re.search(r"Started run (\d+)", output)
    assert match, output
    return int(match.group(1))


def test_flwr_new_then_run_simulates_on_a_local_superlink(user: User) -> None:
    created = user.flwr("new", "my-app", "--publisher", "acme", cwd=user.home)
    assert created.returncode == 0, created.stderr
    app = user.home / "my-app"

    first = user.flwr("run", ".", "--stream", cwd=app)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Started a local SuperLink for simulations (Exec 127.0.0.1:" in first.stderr
    assert "it exits after 15 min idle" in first.stderr
    first_id = run_id_of(first.stdout)
    assert f"Run {first_id}" in first.stdout
    ready = json.loads(user.ready_file.read_text())
    assert alive(ready["pid"])

    pyproject = app / "pyproject.toml"
    text = pyproject.read_text()
    assert "options.num-supernodes = 10" in text
    pyproject.write_text(text.replace("options.num-supernodes = 10", "options.num-supernodes = 50"))
    second = user.flwr("run", ".", "local-simulation", "--stream", cwd=app)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Started a local SuperLink" not in second.stderr  # the same one, reused
    second_id = run_id_of(second.stdout)
    assert json.loads(user.ready_file.read_text())["pid"] == ready["pid"]

    listed = user.flwr("ls", "--format", "json", cwd=app)
    assert listed.returncode == 0, listed.stderr
    runs = {run["run_id"]: run for run in json.loads(listed.stdout)}
    assert {first_id, second_id} <= set(runs)
    assert all(runs[i]["sub_status"] == "completed" for i in (first_id, second_id)), runs
    logs = user.flwr("log", str(second_id), cwd=app)
    assert logs.returncode == 0, logs.stderr
    assert re.search(r"\b50\b[^\n]*SuperNodes", logs.stdout), logs.stdout  # 50 virtual ones
