"""Isolation ``process`` on both sides: operator-run app processes serve real FedAvg runs."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_helpers import APPS, Cli

from corolla.deploy.local import LocalFederation, app_for_federation

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def process_federation(tmp_path: Path) -> Iterator[LocalFederation]:
    fed = LocalFederation(
        tmp_path / "fed", num_nodes=2, isolation="process", mtls=True, node_auth=True
    )
    try:
        fed.start()  # SuperLink, 2 SuperNodes, 1 flwr-serverapp, 2 flwr-clientapp
        yield fed
    finally:
        fed.stop()


@pytest.fixture
def cli(process_federation: LocalFederation, tmp_path: Path) -> Cli:
    app = app_for_federation(
        APPS / "probe",
        tmp_path / "probe",
        process_federation.exec,
        settings=process_federation.federation_settings(),
    )
    return Cli(process_federation, app)


def client_pids(federation: LocalFederation) -> set[str]:
    return {
        pid
        for daemon in federation.app_processes
        if daemon.name.startswith("clientapp")
        for pid in re.findall(r"probe client pid=(\d+)", daemon.output())
    }


def test_fedavg_runs_in_process_mode_on_both_sides(
    cli: Cli, process_federation: LocalFederation
) -> None:
    first = cli("run", str(cli.app), "local", "--stream")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "probe final=2.0" in first.stdout
    assert re.search(r"probe round=2 calls=2", first.stdout), first.stdout
    pids_first = client_pids(process_federation)
    # The same operator-run app processes serve the next run: no process was started for it.
    second = cli("run", str(cli.app), "local", "--stream", "--run-config", "marker='again'")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "probe marker=again" in second.stdout
    expected = {str(d.process.pid) for d in process_federation.app_processes[1:]}
    assert pids_first == expected
    assert client_pids(process_federation) == expected
    assert all(d.process.poll() is None for d in process_federation.app_processes)


def test_clientapp_process_killed_mid_run_and_restarted(
    cli: Cli, process_federation: LocalFederation
) -> None:
    run = cli.start(
        "run",
        str(cli.app),
        "local",
        "--stream",
        "--run-config",
        "round-sleep=3.0 num-server-rounds=3",
    )
    victim = process_federation.app_processes[2]  # node 1's flwr-clientapp

    def training() -> bool:  # a train message is in the victim's hands right now
        output = victim.output()
        return output.count("probe client training pid") > output.count("probe client pid")

    deadline = time.monotonic() + 60
    while not training():
        assert time.monotonic() < deadline, victim.output()
        time.sleep(0.05)
    victim.process.kill()  # within its 3 s of training: the message is lost with it
    victim.process.wait(timeout=10)
    process_federation.start_app_process(
        "clientapp", process_federation.clientappio_address(1), name="clientapp-restarted"
    )
    out, err = run.communicate(timeout=150)
    assert run.returncode == 0, out + err
    assert "probe final=" in out
    assert "stopped responding" in out  # the lost message's error reply reached the log
