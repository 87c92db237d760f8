"""A SuperLink restarted on the same database keeps its runs and says what happened to them."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from integration_helpers import APPS, Cli, alive, children_of, serving, spares_of

from corolla.deploy.local import LocalFederation, app_for_federation

pytestmark = pytest.mark.timeout(120)


def test_runs_survive_a_superlink_crash(tmp_path: Path) -> None:
    fed = LocalFederation(tmp_path / "fed", num_nodes=0)
    fed.workdir.mkdir(parents=True)
    fed.start_superlink()
    try:
        cli = Cli(fed, app_for_federation(APPS / "waiter", tmp_path / "waiter", fed.exec))
        done = cli.submit("marker='done'")
        cli.wait_for(done, "finished")
        interrupted = cli.submit("sleep=60.0")
        cli.wait_for(interrupted, "running")
        assert fed.superlink is not None
        link = fed.superlink.process
        orphans = serving(children_of(link.pid))
        assert orphans, "the ServerApp process should be running"
        spares = spares_of(link.pid)
        assert spares, "the SuperLink should keep a spare ServerApp process"
        link.send_signal(signal.SIGKILL)
        link.wait(timeout=10)
        assert all(alive(pid) for pid in orphans)  # it rides out the outage, retrying
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in spares):  # EOF on its pipe: no run will come
            assert time.monotonic() < deadline, "the dead SuperLink's spare lives on"
            time.sleep(0.1)

        fed.start_superlink()  # same database file, same ports
        runs = {int(r["run_id"]): r for r in cli.runs()}
        assert runs[done]["sub_status"] == "completed"
        assert runs[interrupted]["status"] == "running"  # still served by its ServerApp
        log = cli("log", str(done), str(cli.app), "local")
        assert "waiter marker=done" in log.stdout  # logs are durable too
        stopped = cli("stop", str(interrupted), str(cli.app), "local")
        assert stopped.returncode == 0, stopped.stderr
        # Not a child of the new SuperLink: it learns of the stop by its heartbeat and exits.
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in orphans):
            assert time.monotonic() < deadline, "flwr-serverapp outlived its stopped run"
            time.sleep(0.1)
        after = cli.submit("marker='after'")
        assert cli.wait_for(after, "finished")["sub_status"] == "completed"
    finally:
        fed.stop()
