"""Start and stop 1,000 runs against one SuperLink, then measure what a launcher tick costs
with 20,000 finished runs in its database (it should not grow with them).

    .venv/bin/python bench/run_lifecycle.py [--runs 1000] [--finished 20000] [--ticks 200]

Phase 1 drives a real `flower-superlink` process over the Exec API (StartRun then StopRun of
each run); every run must end `stopped` and no call may fail, else no figure is printed.
Phase 2 fills the same database file with finished runs and times `ServerAppLauncher.tick()`
on it at two sizes (the tick reads only the active runs through an index), next to a full
`list_runs()` for scale.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from corolla.cli.exec_client import ExecClient
from corolla.deploy.local import LocalFederation, app_for_federation
from corolla.fab.build import build_fab_bytes
from corolla.superlink.heartbeats import AppHeartbeats
from corolla.superlink.launcher import ServerAppLauncher
from corolla.superlink.runs import Runs
from corolla.superlink.state import SqliteLinkState

APP = Path(__file__).resolve().parent.parent / "examples" / "digits"


def start_and_stop(workdir: Path, count: int) -> tuple[float, Path]:
    fed = LocalFederation(workdir / "fed", num_nodes=0)
    fed.workdir.mkdir(parents=True, exist_ok=True)
    fed.start_superlink()
    try:
        app = app_for_federation(APP, workdir / "app", fed.exec)
        fab, fab_hash = build_fab_bytes(app)
        started = time.perf_counter()
        with ExecClient(fed.exec, insecure=True) as client:
            ids = []
            for _ in range(count):
                run_id = client.start_run(
                    fab, fab_hash, override_config={}, federation="local", federation_options={}
                )
                client.stop_run(run_id)
                ids.append(run_id)
            elapsed = time.perf_counter() - started
            outcomes = {client.get_run(run_id).status.sub_status for run_id in ids}
        if outcomes != {"stopped"}:
            raise SystemExit(f"runs did not all end stopped: {outcomes}")
        if fed.superlink is None or fed.superlink.process.poll() is not None:
            raise SystemExit("the SuperLink died during the benchmark")
        return elapsed, Path(fed.database or fed.workdir / "state.db")
    finally:
        fed.stop()


def fill(database: Path, total: int) -> None:
    """Copy finished runs until the database holds ``total`` runs (one transaction)."""
    import sqlite3

    conn = sqlite3.connect(database)
    try:
        have = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
        copied = ", ".join(c for c in columns if c not in ("run_id", "seq"))
        with conn:
            seq = conn.execute("SELECT MAX(seq) FROM runs").fetchone()[0]
            while have < total:
                batch = min(have, total - have)
                conn.execute(
                    f"INSERT INTO runs (run_id, seq, {copied}) "
                    f"SELECT abs(random() % 9223372036854775000) + 1, seq + ?, {copied} FROM runs "
                    "WHERE status = 'finished' ORDER BY seq LIMIT ?",
                    (seq, batch),
                )
                seq = conn.execute("SELECT MAX(seq) FROM runs").fetchone()[0]
                have = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    finally:
        conn.close()


def tick_cost(database: Path, ticks: int, queued: int = 0) -> tuple[float, float, int]:
    """Median ms of a launcher tick and of `list_runs()`, and the number of runs stored.

    ``queued``: that many runs wait in the queue (no free slot, so nothing is started)."""
    state = SqliteLinkState(database)
    try:
        runs = Runs(state)
        fab_hash = state.list_runs()[0].fab_hash
        waiting = [
            state.create_run(
                fab_id="bench/app", fab_version="1", fab_hash=fab_hash, override_config={},
                run_config={},
            )
            for _ in range(queued)
        ]  # fmt: skip
        scratch = Path(tempfile.mkdtemp(prefix="bench-launcher-"))
        launcher = ServerAppLauncher(
            runs, "127.0.0.1:1", AppHeartbeats(), scratch, max_concurrent=0
        )
        tick_ms, list_ms = [], []
        for _ in range(ticks):
            begin = time.perf_counter()
            launcher.tick()
            tick_ms.append((time.perf_counter() - begin) * 1000)
        for _ in range(max(3, ticks // 20)):
            begin = time.perf_counter()
            stored = len(state.list_runs())
            list_ms.append((time.perf_counter() - begin) * 1000)
        if [run.run_id for run in state.active_runs()] != waiting:
            raise SystemExit("the queued runs changed: a tick started or lost one")
        if not all("queued" in state.get_run(run_id).details for run_id in waiting):
            raise SystemExit("a queued run does not show its place in the queue")
        for run_id in waiting:
            runs.stop(run_id)
        shutil.rmtree(scratch, ignore_errors=True)
        return statistics.median(tick_ms), statistics.median(list_ms), stored
    finally:
        state.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--finished", type=int, default=20000)
    parser.add_argument("--ticks", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="corolla-bench-") as tmp:
        elapsed, database = start_and_stop(Path(tmp), args.runs)
        print(
            f"{args.runs} runs started and stopped over the Exec API in {elapsed:.2f} s "
            f"({elapsed / args.runs * 1000:.2f} ms per start+stop); all ended stopped"
        )
        for total in (args.runs, args.finished):
            fill(database, total)
            for queued in (0, 10):
                tick, listing, stored = tick_cost(database, args.ticks, queued)
                print(
                    f"launcher tick, {stored - queued:,} finished runs stored, {queued} queued: "
                    f"{tick:.3f} ms median (a full list_runs(): {listing:.1f} ms)"
                )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
