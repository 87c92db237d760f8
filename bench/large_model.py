"""Memory and time for a large model through a local deployment.

Runs FedAvg on the tiny app with a model of --mb megabytes (float32) over K SuperNodes and
samples the resident memory of every process (SuperLink, SuperNodes, ServerApp and ClientApp
processes) while it runs. Prints each role's peak RSS next to the model size, and seconds per
round. DESIGN goal: the SuperLink stays near one model copy, not K.

    python bench/large_model.py [--mb 100] [--nodes 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from corolla.deploy.local import LocalFederation, app_for_federation

APP = Path(__file__).resolve().parent / "apps" / "tiny"
FLWR = Path(sys.executable).parent / "flwr"


def rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


def role_of(pid: int) -> str | None:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    for marker, role in (
        ("corolla.superlink.main", "SuperLink"),
        ("corolla.supernode.main", "SuperNode"),
        ("corolla.runtime.serverapp", "ServerApp process"),
        ("corolla.runtime.clientapp", "ClientApp process"),
    ):
        if marker in cmd:
            return role
    return None


class Sampler(threading.Thread):
    """Peak RSS per role over every Corolla process on the machine (sampled every 50 ms)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    role = role_of(int(entry))
                    if role is not None:
                        self.peaks[role] = max(self.peaks.get(role, 0.0), rss_mb(int(entry)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=100.0, help="model size in MB (float32)")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    params = int(args.mb * 1e6 / 4)
    with (
        tempfile.TemporaryDirectory(prefix="corolla-bench-") as tmp,
        LocalFederation(Path(tmp), num_nodes=args.nodes) as federation,
    ):
        app = app_for_federation(APP, Path(tmp) / "app", federation.exec)
        sampler = Sampler()
        sampler.start()
        start = time.perf_counter()
        result = subprocess.run(
            [
                str(FLWR),
                "run",
                str(app),
                "local",
                "--stream",
                "--run-config",
                f"num-server-rounds={args.rounds} num-params={params} min-nodes={args.nodes}",
            ],
            capture_output=True,
            text=True,
            timeout=1800,
            env=federation.env,
        )
        wall = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
    if result.returncode != 0:
        sys.exit(f"run failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    marks = [float(m) for m in re.findall(r"bench-round \d+ ([0-9.]+)", result.stdout)]
    per_round = [b - a for a, b in itertools.pairwise(marks)]
    print(f"model {args.mb:.0f} MB float32, {args.nodes} SuperNodes, {args.rounds} rounds")
    print(f"run wall time (flwr run -> finished): {wall:.1f} s")
    print(f"median seconds per round: {statistics.median(per_round):.2f} s")
    print(f"peak resident memory per process (one model = {args.mb:.0f} MB):")
    for role in ("SuperLink", "SuperNode", "ServerApp process", "ClientApp process"):
        peak = sampler.peaks.get(role, 0.0)
        print(f"  {role:18s} {peak:8.0f} MB  ({peak / args.mb:.1f} models)")


if __name__ == "__main__":
    main()
