"""Simulation speed and memory: `flwr run` of a FedAvg app on N virtual SuperNodes.

Each case copies bench/apps/simbench, sets its simulation federation to N virtual nodes and
runs ``flwr run APP sim --stream`` with a fresh ``FLWR_HOME``/``COROLLA_HOME``, as a user on a
new machine would: the first case includes starting the CLI's local SuperLink, the next ones
reuse it (both are printed). While a case runs, the resident memory of every Corolla process
(the CLI, the local SuperLink, the ServerApp process and its simulation workers) is summed
every 50 ms; the peak is printed. A case counts only if the run completed and every round's
train and evaluate phases report all N replies ok (the app also fails the run on any failed
reply): a round whose ClientApps all failed is fast and meaningless.

    python bench/simulation.py [--cases 100x100000x3,1000x1000x3] [--backend local]

Targets (issue 10, 2-core machine): 100 nodes, 100k float32 parameters, 3 rounds: wall < 4 s,
rounds < 0.3 s; 1,000 nodes x 3 rounds < 15 s; peak RSS of the whole tree < 1 GiB.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

APP = Path(__file__).resolve().parent / "apps" / "simbench"
FLWR = Path(sys.executable).parent / "flwr"
MARKERS = (
    "corolla.superlink.main",
    "corolla.runtime.serverapp",
    "corolla.simulation._worker_main",
    "/flwr ",
    "ray::",
    "raylet",
    "gcs_server",
)


def rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


def corolla_pids() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if any(marker in cmd for marker in MARKERS) and int(entry) != os.getpid():
                found.append(int(entry))
    return found


class TreeSampler(threading.Thread):
    """Peak of the summed RSS of every Corolla process, sampled every 50 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, sum(rss_mib(pid) for pid in corolla_pids()))


@dataclass
class Case:
    nodes: int
    params: int
    rounds: int


@dataclass
class Figures:
    wall: float
    rounds: list[float]
    peak_mib: float


def app_copy(dest: Path, case: Case, backend: str) -> Path:
    shutil.copytree(APP, dest, ignore=shutil.ignore_patterns("__pycache__", "*.fab"))
    pyproject = dest / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text())
    options: dict[str, object] = {"num-supernodes": case.nodes}
    if backend != "local":
        options["backend"] = {"name": backend}
    data["tool"]["flwr"]["federations"]["sim"] = {"options": options}
    pyproject.write_text(tomli_w.dumps(data))
    return dest


def check_replies(output: str, case: Case) -> None:
    """Every round's train and evaluate phases got all of their replies, none failed."""
    phases = re.findall(r"\[ROUND (\d+)\] (\w+): (\d+) of (\d+) replies ok, (\d+) failed", output)
    complete = {
        (int(r), phase)
        for r, phase, ok, sent, failed in phases
        if int(ok) == int(sent) == case.nodes and int(failed) == 0
    }
    wanted = {(r, p) for r in range(1, case.rounds + 1) for p in ("train", "evaluate")}
    if not wanted <= complete:
        sys.exit(f"not every reply was ok: {phases}\n{output[-3000:]}")


def run_case(work: Path, env: dict[str, str], case: Case, backend: str, label: str) -> Figures:
    app = app_copy(work / label, case, backend)
    config = f"num-server-rounds={case.rounds} num-params={case.params}"
    sampler = TreeSampler()
    sampler.start()
    start = time.time()
    result = subprocess.run(
        [str(FLWR), "run", str(app), "sim", "--stream", "--run-config", config],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
        check=False,
    )
    wall = time.time() - start
    sampler.done.set()
    sampler.join()
    if result.returncode != 0:
        sys.exit(f"{label}: the run failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    check_replies(result.stdout, case)
    marks = [float(m) for m in re.findall(r"bench-round \d+ ([0-9.]+)", result.stdout)]
    if len(marks) != case.rounds + 1:  # evaluate_fn runs on the initial arrays, then per round
        sys.exit(f"{label}: expected {case.rounds + 1} round marks:\n{result.stdout[-3000:]}")
    return Figures(wall, [b - a for a, b in itertools.pairwise(marks)], sampler.peak)


def stop_local_superlink(home: Path) -> None:
    """Stop the local SuperLink the CLI started for these runs (by the pid it wrote)."""
    for ready in home.glob("**/superlink.ready.json"):
        pid = int(json.loads(ready.read_text())["pid"])
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)


def parse_cases(text: str) -> list[Case]:
    cases = []
    for part in text.split(","):
        nodes, params, rounds = (int(x) for x in part.split("x"))
        cases.append(Case(nodes, params, rounds))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", default="100x100000x3,1000x1000x3", help="NODESxPARAMSxROUNDS")
    parser.add_argument("--backend", default="local", help="local (built-in) or ray")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="corolla-bench-sim-"))
    home = work / "corolla-home"
    env = {
        **os.environ,
        "FLWR_HOME": str(work / "flwr-home"),
        "COROLLA_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
    }
    rows = []
    try:
        for i, case in enumerate(parse_cases(args.cases)):
            for attempt in ("cold", "warm") if i == 0 else ("warm",):
                label = f"{case.nodes}n-{attempt}"
                figures = run_case(work, env, case, args.backend, label)
                rows.append((case, attempt, figures))
    finally:
        stop_local_superlink(home)
        shutil.rmtree(work, ignore_errors=True)
    print(f"backend {args.backend}, {os.cpu_count()} CPUs")
    print(
        f"{'nodes':>6} {'params':>8} {'rounds':>6} {'SuperLink':>9} {'wall s':>7} "
        f"{'round s (median, max)':>22} {'peak RSS MiB':>12}"
    )
    for case, attempt, figures in rows:
        per_round = f"{statistics.median(figures.rounds):.3f}, {max(figures.rounds):.3f}"
        print(
            f"{case.nodes:>6} {case.params:>8} {case.rounds:>6} {attempt:>9} "
            f"{figures.wall:>7.2f} {per_round:>22} {figures.peak_mib:>12.0f}"
        )
    print("cold: includes starting the CLI's local SuperLink; warm: it was running")


if __name__ == "__main__":
    main()
