"""The local SuperLink of simulation federations: started once, reused while alive, a stale
ready file replaced, one start under concurrency; and which address each command dials."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from corolla.cli import localsuperlink
from corolla.cli.commands import _shared
from corolla.cli.commands._shared import NoLocalSuperLink, app_and_federation, connect
from corolla.cli.commands.run import federation_options
from corolla.cli.config import Federation
from corolla.cli.localsuperlink import (
    LOCK_FILE,
    LOG_FILE,
    READY_FILE,
    STARTED,
    ensure_local_superlink,
    local_superlink_dir,
    running_local_superlink,
)
from corolla.cli.main import run_cli
from corolla.common.errors import DeadlineExceeded, Unavailable
from corolla.common.protocol import NUM_SUPERNODES_OPTION

pytestmark = pytest.mark.timeout(90)
SIM = Federation(name="local-simulation", address="", insecure=False, num_supernodes=10)
DEPLOYED = Federation(name="prod", address="127.0.0.1:9093", insecure=True)


@pytest.fixture(autouse=True)
def reap_started() -> Iterator[None]:
    """Every SuperLink a test started is stopped by its pid and reaped, even on failure."""
    yield
    for process in STARTED:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    left = [process.pid for process in STARTED if process.poll() is None]
    STARTED.clear()
    assert not left, f"still running: {left}"


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=30)
    return process.pid


def test_the_directory_is_under_corolla_home() -> None:
    assert local_superlink_dir() == Path(os.environ["COROLLA_HOME"]) / "local-superlink"


def test_no_ready_file_means_none_running_and_nothing_is_started() -> None:
    assert running_local_superlink() is None
    with pytest.raises(NoLocalSuperLink, match="no local SuperLink is running"):
        connect(SIM)
    assert STARTED == []


@pytest.mark.parametrize("stale", ["dead pid", "no Exec API", "garbage"])
def test_a_stale_ready_file_is_not_running_and_is_replaced(stale: str) -> None:
    directory = local_superlink_dir()
    directory.mkdir(parents=True)
    ready = directory / READY_FILE
    if stale == "garbage":
        ready.write_text("{not json")
    else:
        pid = dead_pid() if stale == "dead pid" else os.getpid()  # alive, but no Exec API
        ready.write_text(json.dumps({"pid": pid, "exec": "127.0.0.1:1"}))
    assert running_local_superlink() is None
    address = ensure_local_superlink()
    assert len(STARTED) == 1
    data = json.loads(ready.read_text())
    assert (data["pid"], data["exec"]) == (STARTED[0].pid, address)
    assert address.startswith("127.0.0.1:") and address != "127.0.0.1:1"


def test_a_live_one_is_reused_and_the_start_is_said_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = ensure_local_superlink()
    err = capsys.readouterr().err
    assert f"Started a local SuperLink for simulations (Exec {first}; logs: " in err
    assert "superlink.log; it exits after 15 min idle)" in err
    assert ensure_local_superlink() == first
    assert capsys.readouterr().err == ""
    assert len(STARTED) == 1
    running = running_local_superlink()
    assert running is not None and (running.pid, running.exec_address) == (STARTED[0].pid, first)
    with connect(SIM) as client:  # ls/log/stop: the running one
        assert client.address == first
        assert client.list_runs().runs == ()
    assert (local_superlink_dir() / "state.db").exists()


def test_concurrent_starts_start_one_superlink() -> None:
    addresses: list[str] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            addresses.append(ensure_local_superlink())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(addresses) == 4 and len(set(addresses)) == 1
    assert len(STARTED) == 1


def test_a_lock_held_too_long_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localsuperlink, "LOCK_TIMEOUT", 0.2)
    directory = local_superlink_dir()
    directory.mkdir(parents=True)
    with (directory / LOCK_FILE).open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(DeadlineExceeded, match=r"another flwr has held .*superlink\.lock"):
            ensure_local_superlink()
    assert STARTED == []


def test_a_superlink_that_does_not_come_up_shows_its_log_tail() -> None:
    with pytest.raises(Unavailable, match=r"(?s)exited with code 2 before it was ready.*idle"):
        ensure_local_superlink(idle_timeout=-1)  # refused by flower-superlink: a usage error


def test_connect_picks_the_address_by_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_shared, "ensure_local_superlink", lambda: "127.0.0.1:4001")
    monkeypatch.setattr(
        _shared,
        "running_local_superlink",
        lambda: localsuperlink.LocalSuperLink(1, "127.0.0.1:4002"),
    )
    with connect(DEPLOYED) as client:
        assert client.address == "127.0.0.1:9093"
    with connect(DEPLOYED, start_local=True) as client:  # a deployed one never starts anything
        assert client.address == "127.0.0.1:9093"
    with connect(SIM, start_local=True) as client:  # flwr run
        assert client.address == "127.0.0.1:4001"
    with connect(SIM) as client:  # flwr ls/log/stop
        assert client.address == "127.0.0.1:4002"


def test_a_lone_app_dir_that_does_not_exist_is_the_federation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "app").mkdir()
    monkeypatch.chdir(tmp_path)
    assert app_and_federation(Path("prod"), None) == (Path("."), "prod")
    assert app_and_federation(Path("app"), None) == (Path("app"), None)
    assert app_and_federation(Path("prod"), "x") == (Path("prod"), "x")
    assert app_and_federation(Path("no/such"), None) == (Path("no/such"), None)


def test_ls_log_stop_outside_an_app_with_no_local_superlink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no pyproject.toml: the built-in local-simulation
    assert run_cli(["ls", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == []
    assert "flwr ls: no local SuperLink is running (`flwr run` starts it" in err
    assert "simulation federation 'local-simulation' has no pending or running run" in err
    assert run_cli(["ls", "local-simulation"]) == 0  # the federation as the first argument
    capsys.readouterr()
    assert run_cli(["log", "3"]) == 3
    assert "flwr log: run 3 not found: no local SuperLink is running" in (capsys.readouterr().err)
    assert run_cli(["stop", "3"]) == 3
    assert STARTED == []  # none of them started a SuperLink
    assert run_cli(["ls", "prod"]) == 2  # unknown federation: still an error naming it
    assert "unknown federation 'prod'" in capsys.readouterr().err


def test_user_config_federation_outside_an_app(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Path(os.environ["FLWR_HOME"])
    home.mkdir(parents=True)
    (home / "config.toml").write_text('[superlink.dev]\naddress = "127.0.0.1:1"\ninsecure = true\n')
    monkeypatch.chdir(tmp_path)
    assert run_cli(["ls", "dev"]) == 4  # dialled 127.0.0.1:1: unreachable
    assert "cannot reach the SuperLink at 127.0.0.1:1" in capsys.readouterr().err


def test_login_to_a_simulation_says_it_needs_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_cli(["login"]) == 2
    err = capsys.readouterr().err
    assert "'local-simulation' is a simulation" in err and "needs no login" in err


def test_a_simulation_run_carries_num_supernodes_and_its_backend_options() -> None:
    sim = Federation(
        name="sim",
        address="",
        insecure=False,
        num_supernodes=50,
        options={"options.backend.client-resources.num-cpus": 2},
    )
    assert federation_options(sim) == {
        NUM_SUPERNODES_OPTION: 50,
        "options.backend.client-resources.num-cpus": 2,
    }
    assert federation_options(DEPLOYED) == {}


def test_flwr_local_status_and_stop(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["local", "status"]) == 0
    assert "No local SuperLink is running" in capsys.readouterr().out
    assert run_cli(["local", "stop"]) == 0
    assert capsys.readouterr().out == "No local SuperLink is running.\n"
    address = ensure_local_superlink()
    pid = STARTED[0].pid
    capsys.readouterr()
    assert run_cli(["local", "status"]) == 0
    logs = local_superlink_dir() / LOG_FILE
    assert f"pid {pid}, Exec {address}, logs {logs}" in capsys.readouterr().out
    assert run_cli(["local", "stop"]) == 0
    assert capsys.readouterr().out == f"Stopped the local SuperLink (pid {pid}).\n"
    assert STARTED[0].returncode == 0  # a graceful stop, reaped
    assert not (local_superlink_dir() / READY_FILE).exists()
    assert running_local_superlink() is None
