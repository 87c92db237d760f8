"""Helpers of the integration tests: the flwr CLI as a user runs it, process trees.

A daemon in isolation subprocess keeps one spare app process waiting for the next run
(`corolla.common.spare`): it is the app process whose stdin is still its daemon's pipe. A run's
process (a taken spare, or one started for the run) has ``/dev/null`` there. `serving` tells
the ones serving runs from the spares.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from corolla.deploy.local import LocalFederation

APPS = Path(__file__).parent / "apps"
FLWR = Path(sys.executable).parent / "flwr"


def started_run_id(output: str) -> int:
    match = re.search(r"Started run (\d+)", output)
    assert match, output
    return int(match.group(1))


class Cli:
    """Runs the ``flwr`` console script like a user, against one federation."""

    def __init__(self, federation: LocalFederation, app: Path) -> None:
        self.federation = federation
        self.app = app

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FLWR), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.federation.env,
            check=False,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(FLWR), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.federation.env,
        )

    def runs(self) -> list[dict[str, Any]]:
        result = self("ls", str(self.app), "local", "--format", "json")
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        return list(data if isinstance(data, list) else data["runs"])

    def submit(self, config: str = "") -> int:
        """``flwr run`` (not streaming); returns the new run's id."""
        args = ["run", str(self.app), "local"] + (["--run-config", config] if config else [])
        result = self(*args)
        assert result.returncode == 0, result.stderr
        return started_run_id(result.stdout)

    def wait_for(self, run_id: int, status: str, timeout: float = 60) -> dict[str, Any]:
        """The run's ``flwr ls`` row once it reaches ``status``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.run_info(run_id)
            if info["status"] == status:
                return info
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} never reached {status}: {self.run_info(run_id)}")

    def run_info(self, run_id: int) -> dict[str, Any]:
        result = self("ls", str(self.app), "local", "--run-id", str(run_id), "--format", "json")
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        rows = data if isinstance(data, list) else data["runs"]
        return dict(rows[0])


def children_of(pid: int) -> list[int]:
    """Live descendant pids of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current:
                found.append(child)
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper that is not ours counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def is_spare(pid: int) -> bool:
    """Whether ``pid`` is a spare app process, waiting for a run on its daemon's pipe."""
    try:
        return os.readlink(f"/proc/{pid}/fd/0").startswith("pipe:")
    except OSError:
        return False


def serving(pids: list[int]) -> list[int]:
    """``pids`` but the spares: the processes that serve runs (or do something else)."""
    return [pid for pid in pids if not is_spare(pid)]


def spares_of(pid: int) -> list[int]:
    """The spare app processes among the live descendants of ``pid``."""
    return [child for child in children_of(pid) if is_spare(child) and alive(child)]
