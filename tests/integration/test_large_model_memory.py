"""Memory bounds of a large-model run (issue 12), measured on a real deployment.

A 200 MB float32 model (10 arrays) makes two FedAvg rounds (train and evaluate, both carrying
the model) over two SuperNodes, with the benchmark's app (every reply must be usable). The
resident memory of every process the federation started is sampled while it runs; each role
must stay within its bound, with a margin for the interpreter, gRPC and the libraries:

- SuperLink: about 300 MiB whatever the model (payloads are files, streamed in chunks;
  measured 107-256 MiB here, the bound is 350 MiB for gRPC's buffers under load);
- SuperNode: under one model copy plus a constant (its objects are files);
- ServerApp: under three copies (the current model, the running mean, one reply in flight);
- ClientApp: under three copies (the message, the reply, what the app's code holds).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest
from integration_helpers import Cli

from corolla.deploy.local import LocalFederation, app_for_federation

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

APP = Path(__file__).resolve().parents[2] / "bench" / "apps" / "tiny"
PARAMS = 50_000_000  # 200 MB of float32
MODEL_MIB = PARAMS * 4 / 2**20
BASE_MIB = 200  # interpreter, gRPC, NumPy, the records and protobuf modules
ROLES = {
    "corolla.superlink.main": "SuperLink",
    "corolla.supernode.main": "SuperNode",
    "corolla.runtime.serverapp": "ServerApp",
    "corolla.runtime.clientapp": "ClientApp",
}


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _rss_mib(pid: int) -> float:
    try:
        match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return 0.0
    return int(match.group(1)) / 1024 if match else 0.0


def _role(pid: int) -> str | None:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return next((role for marker, role in ROLES.items() if marker in command), None)


class PeakRss(threading.Thread):
    """Peak RSS per role over the daemons ``roots`` and every process below them."""

    def __init__(self, roots: list[int]) -> None:
        super().__init__(daemon=True)
        self.roots = set(roots)
        self.peaks: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            parents = _parents()
            tree, frontier = set(self.roots), set(self.roots)
            while frontier:
                frontier = {pid for pid, parent in parents.items() if parent in frontier} - tree
                tree |= frontier
            for pid in tree:
                role = _role(pid)
                if role is not None:
                    self.peaks[role] = max(self.peaks.get(role, 0.0), _rss_mib(pid))


def test_a_large_model_run_stays_within_the_memory_bounds(tmp_path: Path) -> None:
    with LocalFederation(tmp_path / "fed", num_nodes=2) as federation:
        app = app_for_federation(APP, tmp_path / "app", federation.exec)
        assert federation.superlink is not None
        roots = [federation.superlink.process.pid, *(n.process.pid for n in federation.supernodes)]
        sampler = PeakRss(roots)
        sampler.start()
        try:
            config = f"num-server-rounds=2 num-params={PARAMS} num-arrays=10 min-nodes=2"
            result = Cli(federation, app)(
                "run", str(app), "local", "--stream", "--run-config", config, timeout=500
            )
        finally:
            sampler.done.set()
            sampler.join(10)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert len(re.findall(r"bench-round \d+ ", result.stdout)) == 3, result.stdout
    peaks = sampler.peaks
    assert set(peaks) == set(ROLES.values()), peaks
    bounds = {
        "SuperLink": 350.0,
        "SuperNode": MODEL_MIB + BASE_MIB,
        "ServerApp": 3 * MODEL_MIB + BASE_MIB,
        "ClientApp": 3 * MODEL_MIB + BASE_MIB,
    }
    over = {
        role: (round(peaks[role]), round(bound))
        for role, bound in bounds.items()
        if peaks[role] > bound
    }
    assert not over, f"peak RSS over its bound (MiB, bound): {over}; all peaks: {peaks}"
