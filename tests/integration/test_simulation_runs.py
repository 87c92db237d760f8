"""Simulation runs go through the SuperLink like deployed runs: a run whose federation options
hold ``num-supernodes`` is run by the ordinary ServerApp process on a `SimulationGrid`, and
``flwr ls``, ``log``, ``run --stream`` and ``stop`` behave as for a deployment."""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from integration_helpers import APPS, Cli, alive, children_of, serving, started_run_id

from corolla.deploy.local import LocalFederation, app_for_federation
from corolla.records import ErrorCode

pytestmark = pytest.mark.timeout(120)

SIMAPP = APPS / "simapp"
ROUNDS = 3  # simapp's num-server-rounds
REPLY = re.compile(r"simapp round=(\d+) partition=(\d+) calls=(\d+)")
ERROR = re.compile(r"simapp round=(\d+) error code=(\d+) (.*)")
CHECKSUM = re.compile(r"simapp checksum=([0-9a-f]{64})")


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    """A SuperLink without SuperNodes: simulation runs need none."""
    fed = LocalFederation(tmp_path_factory.mktemp("simlink"), num_nodes=0)
    try:
        fed.start()
        yield fed
    finally:
        fed.stop()


def sim_cli(
    link: LocalFederation,
    dest: Path,
    num_supernodes: int = 2,
    backend: dict[str, Any] | None = None,
) -> Cli:
    """simapp in ``dest``, its federation ``local`` a simulation run on ``link``'s SuperLink."""
    options: dict[str, Any] = {"num-supernodes": num_supernodes}
    if backend is not None:
        options["backend"] = backend
    app = app_for_federation(
        SIMAPP, dest, link.exec, settings=link.federation_settings(), options=options
    )
    return Cli(link, app)


def stream(cli: Cli, config: str = "") -> tuple[int, str]:
    """``flwr run --stream``: its exit code and output."""
    args = ["run", str(cli.app), "local", "--stream"]
    result = cli(*(args + (["--run-config", config] if config else [])), timeout=90)
    return result.returncode, result.stdout + result.stderr


def log_of(cli: Cli, run_id: int) -> str:
    result = cli("log", str(run_id), str(cli.app), "local", timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_simulation_run_is_a_run(link: LocalFederation, tmp_path: Path) -> None:
    cli = sim_cli(link, tmp_path / "app", num_supernodes=3, backend={"num-workers": 2})
    code, output = stream(cli, "num-nodes=3")
    assert code == 0, output
    run_id = started_run_id(output)
    info = cli.run_info(run_id)
    assert (info["status"], info["sub_status"]) == ("finished", "completed"), info
    log = log_of(cli, run_id)
    assert f"run {run_id}: simulating 3 virtual SuperNodes on 2 worker processes" in log
    assert CHECKSUM.search(log), log
    # The simulation's grid describes the run as the SuperLink does (Flower's `grid.run`).
    assert f"simapp run={run_id} fab={cli.run_info(run_id)['fab_hash']}" in log, (info, log)
    # Each virtual node keeps its context across rounds: its counter is the round number.
    calls = {(int(r), int(p)): int(c) for r, p, c in REPLY.findall(log)}
    expected = {(r, p): r for r in range(1, ROUNDS + 1) for p in range(3)}
    assert calls == expected, log


def test_simulation_and_deployment_give_the_same_model(
    link: LocalFederation, tmp_path: Path
) -> None:
    code, simulated = stream(sim_cli(link, tmp_path / "sim"))
    assert code == 0, simulated
    with LocalFederation(tmp_path / "fed", num_nodes=2) as deployed:
        app = app_for_federation(
            SIMAPP, tmp_path / "dep", deployed.exec, settings=deployed.federation_settings()
        )
        code, real = stream(Cli(deployed, app))
    assert code == 0, real
    sim_sum, real_sum = CHECKSUM.findall(simulated), CHECKSUM.findall(real)
    assert len(sim_sum) == 1 and sim_sum == real_sum, (simulated, real)
    assert sorted(REPLY.findall(simulated)) == sorted(REPLY.findall(real))


def test_a_raising_clientapp_gives_the_error_reply_of_a_deployment(
    link: LocalFederation, tmp_path: Path
) -> None:
    config = "raise-partition=1"
    code, simulated = stream(sim_cli(link, tmp_path / "sim"), config)
    assert code == 0, simulated  # the ServerApp goes on with the usable reply
    with LocalFederation(tmp_path / "fed", num_nodes=2) as deployed:
        app = app_for_federation(
            SIMAPP, tmp_path / "dep", deployed.exec, settings=deployed.federation_settings()
        )
        code, real = stream(Cli(deployed, app), config)
    assert code == 0, real
    sim_errors, real_errors = ERROR.findall(simulated), ERROR.findall(real)
    assert len(sim_errors) == ROUNDS, simulated
    assert sim_errors == real_errors
    _, error_code, reason = sim_errors[0]
    assert int(error_code) == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert reason == "RuntimeError: simapp ClientApp failure on purpose (partition 1)"
    assert CHECKSUM.findall(simulated) == CHECKSUM.findall(real)


def test_flwr_stop_ends_a_simulation_and_its_workers(link: LocalFederation, tmp_path: Path) -> None:
    cli = sim_cli(link, tmp_path / "app")
    run_id = cli.submit("round-sleep=60.0")
    assert link.superlink is not None
    link_pid = link.superlink.process.pid
    cli.wait_for(run_id, "running")
    deadline = time.monotonic() + 30
    # The ServerApp process and its two workers (the workers' ClientApps are asleep), not the
    # SuperLink's spare ServerApp process.
    while len(started := serving(children_of(link_pid))) < 3:
        assert time.monotonic() < deadline, f"no workers started: {started}"
        time.sleep(0.1)
    stop = cli("stop", str(run_id), str(cli.app), "local")
    assert stop.returncode == 0, stop.stderr
    info = cli.wait_for(run_id, "finished")
    assert info["sub_status"] == "stopped"
    assert "stopped by user" in str(info["details"])
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in started):
        assert time.monotonic() < deadline, [pid for pid in started if alive(pid)]
        time.sleep(0.1)


def test_a_clientapp_that_cannot_be_imported_fails_the_run_with_the_reason(
    link: LocalFederation, tmp_path: Path
) -> None:
    cli = sim_cli(link, tmp_path / "app")
    pyproject = cli.app / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text())
    data["tool"]["flwr"]["app"]["components"]["clientapp"] = "simapp.broken:app"
    pyproject.write_text(tomli_w.dumps(data))
    code, output = stream(cli)
    assert code != 0, output
    info = cli.run_info(started_run_id(output))
    assert (info["status"], info["sub_status"]) == ("finished", "failed"), info
    details = str(info["details"])
    assert "ClientApp cannot be loaded: app import error in 'simapp.broken'" in details, details
    assert "No module named 'simapp_no_such_module'" in details, details
    codes = {int(code) for _, code, _ in ERROR.findall(output)}
    assert codes == {ErrorCode.LOAD_CLIENT_APP_EXCEPTION}, output
