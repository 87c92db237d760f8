"""Spare app processes in a real federation (mutual TLS, SuperNode auth): a run's ServerApp
and ClientApp processes are the spares that waited before it, the next run gets new ones, and
nothing the federation started outlives it."""

from __future__ import annotations

import re
import time
from collections.abc import Collection
from pathlib import Path

import pytest
from integration_helpers import APPS, Cli, alive, children_of, spares_of, started_run_id

from corolla.deploy.local import LocalFederation, app_for_federation

pytestmark = pytest.mark.timeout(180)


def one_spare(daemon: int, other_than: Collection[int] = (), timeout: float = 60) -> int:
    """The spare app process of the daemon ``daemon`` (not one of ``other_than``)."""
    deadline = time.monotonic() + timeout
    while True:
        spares = [pid for pid in spares_of(daemon) if pid not in other_than]
        if len(spares) == 1:
            return spares[0]
        assert len(spares) < 2, f"daemon {daemon} keeps more than one spare: {spares}"
        assert time.monotonic() < deadline, f"daemon {daemon} has no spare"
        time.sleep(0.05)


def run_pids(cli: Cli, marker: str) -> tuple[int, set[int]]:
    """Run the probe app to its end; the pids of its ServerApp and of its ClientApps."""
    result = cli("run", str(cli.app), "local", "--stream", "--run-config", f"marker='{marker}'")
    assert result.returncode == 0, result.stdout + result.stderr
    server = re.findall(r"probe server pid=(\d+)", result.stdout)
    assert len(server) == 1, result.stdout
    # The nodes' log lines may reach the SuperLink after the run ended: read its log until
    # both nodes' lines are there.
    run_id, deadline = started_run_id(result.stdout), time.monotonic() + 60
    while True:
        log = cli("log", str(run_id), str(cli.app), "local").stdout
        clients = set(re.findall(r"\[node (\d+)\].*probe client pid=(\d+)", log))
        if len({node for node, _ in clients}) == 2:
            break
        assert time.monotonic() < deadline, log
        time.sleep(0.2)
    return int(server[0]), {int(pid) for _, pid in clients}


def test_runs_are_served_by_the_spares_that_waited_for_them(tmp_path: Path) -> None:
    federation = LocalFederation(tmp_path / "fed", num_nodes=2, mtls=True, node_auth=True)
    seen: set[int] = set()
    try:
        federation.start()
        assert federation.superlink is not None
        link = federation.superlink.process.pid
        nodes = [node.process.pid for node in federation.supernodes]
        settings = federation.federation_settings()
        probe = app_for_federation(
            APPS / "probe", tmp_path / "probe", federation.exec, settings=settings
        )
        cli = Cli(federation, probe)

        server_spare = one_spare(link)
        client_spares = {one_spare(node) for node in nodes}
        server, clients = run_pids(cli, "first")
        assert server == server_spare  # the ServerApp process waited before the run
        assert clients == client_spares  # so did each node's ClientApp process
        seen |= {server, *clients}

        # Each daemon has a new spare for the next run; the next run gets those.
        next_server = one_spare(link, other_than={server})
        next_clients = {one_spare(node, other_than=clients) for node in nodes}
        server2, clients2 = run_pids(cli, "second")
        assert server2 == next_server != server
        assert clients2 == next_clients and not clients2 & clients
        seen |= {server2, *clients2}
        seen |= set(children_of(link)) | {pid for node in nodes for pid in children_of(node)}
        seen |= {link, *nodes}
    finally:
        federation.stop()
    left = [pid for pid in seen if alive(pid)]
    assert not left, f"processes outlived the federation: {left}"
