"""The simulation backend: worker crashes, apps that cannot load or travel, resources."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest
import sim_apps

from corolla.app import ConfigRecord, ErrorCode, Message, RecordDict
from corolla.clientapp import ClientApp
from corolla.common.errors import InvalidArgument
from corolla.simulation import ClientAppSource, SimulationGrid
from corolla.simulation.backend import BackendConfig

pytestmark = pytest.mark.timeout(60)


def message(node_id: int, **config: object) -> Message:
    content = RecordDict({"config": ConfigRecord(dict(config))}) if config else RecordDict()
    return Message(content, dst_node_id=node_id, message_type="train")


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_worker_killed_mid_task_gives_an_error_reply_and_the_next_round_works(
    tmp_path: Path,
) -> None:
    before = sim_apps.child_pids()
    pid_file = tmp_path / "pid"
    with SimulationGrid(sim_apps.app, 4, backend_config={"num-workers": 2}) as grid:
        sent = [message(1, **{"pid-file": str(pid_file), "sleep": 30.0})]
        sent += [message(n) for n in (2, 3, 4)]
        ids = grid.push_messages(sent)
        wait_for(pid_file.exists)
        victim = int(pid_file.read_text())
        assert victim in grid.worker_pids()
        os.kill(victim, signal.SIGKILL)
        replies = {r.metadata.src_node_id: r for r in grid.receive(ids, timeout=20)}
        assert sorted(replies) == [1, 2, 3, 4]
        lost = replies[1]
        assert lost.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        assert lost.error.reason == "ClientApp process exited with code -9"
        assert all(replies[n].content["metrics"]["n"] == 1 for n in (2, 3, 4))
        wait_for(lambda: victim not in grid.worker_pids() and len(grid.worker_pids()) == 2)
        # The next round: every node answers; node 1's context is as before the crash.
        replies = {
            r.metadata.src_node_id: r
            for r in grid.send_and_receive([message(n) for n in (1, 2, 3, 4)], timeout=20)
        }
        counts = {n: r.content["metrics"]["n"] for n, r in replies.items()}
        assert counts == {1: 1, 2: 2, 3: 2, 4: 2}
    assert sim_apps.child_pids() - before == set()


def test_a_clientapp_that_cannot_be_loaded_answers_every_message_with_the_reason() -> None:
    source = ClientAppSource.from_reference("no_such_module_here:app")
    with SimulationGrid(source, 3, backend_config={"num-workers": 1}) as grid:
        replies = grid.send_and_receive([message(n) for n in (1, 2, 3)], timeout=20)
    assert len(replies) == 3
    for reply in replies:
        assert reply.error.code == ErrorCode.LOAD_CLIENT_APP_EXCEPTION
        assert reply.error.reason.startswith("ClientApp cannot be loaded: app import error")
        assert "no_such_module_here" in reply.error.reason


def test_workers_that_cannot_load_the_clientapp_are_not_started_again() -> None:
    """A worker that fails to load the app exits; starting another would fail the same way,
    over and over (a loop that once starved a loaded machine), so the pool stops at none."""
    before = sim_apps.child_pids()
    source = ClientAppSource.from_reference("no_such_module_here:app")
    with SimulationGrid(source, 4, backend_config={"num-workers": 2}) as grid:
        assert grid.wait_ready(30)
        wait_for(lambda: grid.num_workers == 0, timeout=30)  # each exited, none replaced
        assert sim_apps.child_pids() - before == set()
        (reply,) = grid.send_and_receive([message(1)], timeout=20)  # still answered
        assert reply.error.code == ErrorCode.LOAD_CLIENT_APP_EXCEPTION


def test_a_reference_and_a_directory_load_like_the_deployment_runtime() -> None:
    here = Path(sim_apps.__file__).parent
    source = ClientAppSource.from_reference("sim_apps:app", here)
    with SimulationGrid(source, 2, backend_config={"num-workers": 1}) as grid:
        replies = grid.send_and_receive([message(1), message(2)], timeout=20)
    assert sorted(r.content["metrics"]["node-id"] for r in replies) == [1, 2]
    with pytest.raises(InvalidArgument, match="module:attribute"):
        ClientAppSource.from_reference("sim_apps.app")


def test_a_clientapp_the_workers_cannot_import_is_refused_with_the_reason() -> None:
    local = ClientApp()  # bound to no module-level name: a worker cannot find it
    local.train()(lambda msg, context: msg)
    with pytest.raises(InvalidArgument, match="module-level name"):
        SimulationGrid(local, 2)


SCRIPT = """
from corolla.app import ArrayRecord, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.serverapp import ServerApp
from corolla.simulation import run_simulation

client = ClientApp()
server = ServerApp()


@client.train()
def train(msg, context):
    print(f"training on partition {context.node_config['partition-id']}")
    return Message(RecordDict({"m": MetricRecord({"p": context.node_config["partition-id"]})}),
                   reply_to=msg)


@server.main()
def main(grid, context):
    replies = grid.send_and_receive(
        [Message(RecordDict(), dst_node_id=n, message_type="train") for n in grid.get_node_ids()],
        timeout=60,
    )
    print("partitions", sorted(r.content["m"]["p"] for r in replies))


if __name__ == "__main__":
    import logging
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    run_simulation(server_app=server, client_app=client, num_supernodes=3,
                   backend_config={"num-workers": 2})
"""


def test_apps_defined_in_the_script_that_runs_the_simulation_reach_the_workers(
    tmp_path: Path,
) -> None:
    script = tmp_path / "experiment.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "partitions [0, 1, 2]" in done.stdout
    # What the ClientApp printed reaches the parent's log, marked with its worker.
    worker_lines = [
        line for line in done.stderr.splitlines() if line.startswith("corolla.simulation.worker")
    ]
    assert sum("training on partition" in line for line in worker_lines) == 3, done.stderr
    assert all("[worker " in line for line in worker_lines)


def test_backend_config_gives_workers_from_client_resources(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert BackendConfig.parse(None, max_workers=100).num_workers == 8
    assert BackendConfig.parse(None, max_workers=3).num_workers == 3  # never more than nodes
    two_cpus = {"client-resources": {"num-cpus": 2}}
    assert BackendConfig.parse(two_cpus, max_workers=100).num_workers == 4
    flower_spelling = {"client_resources": {"num_cpus": 3, "num_gpus": 0.0}}
    assert BackendConfig.parse(flower_spelling, max_workers=100) == BackendConfig(2, num_cpus=3)
    assert BackendConfig.parse({"client-resources": {"num-cpus": 64}}, max_workers=9).num_workers
    assert BackendConfig.parse({"num-workers": 5, "init_args": {}}, max_workers=9).num_workers == 5
    with pytest.raises(InvalidArgument, match="unknown backend_config key 'num-cpu'"):
        BackendConfig.parse({"client-resources": {"num-cpu": 1}}, max_workers=9)
    with pytest.raises(InvalidArgument, match="num-cpus must be above 0"):
        BackendConfig.parse({"client-resources": {"num-cpus": 0}}, max_workers=9)
    with pytest.raises(InvalidArgument, match="unknown simulation backend 'dask'"):
        BackendConfig.parse({"name": "dask"}, max_workers=9)
    ray = BackendConfig.parse(
        {"name": "ray", "init-args": {"num-cpus": 4}, "client-resources": {"num-gpus": 1}},
        max_workers=9,
    )
    # Ray places GPUs itself; the pool size comes from the cluster unless given.
    assert ray == BackendConfig(0, name="ray", num_gpus=1, init_args={"num_cpus": 4})


def test_num_gpus_limits_workers_to_the_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    half = BackendConfig.parse({"client-resources": {"num-gpus": 0.5}}, max_workers=100)
    assert half == BackendConfig(4, ("0", "0", "1", "1"), num_gpus=0.5)
    one = BackendConfig.parse({"client-resources": {"num-gpus": 1}}, max_workers=100)
    assert one == BackendConfig(2, ("0", "1"), num_gpus=1)
    both = BackendConfig.parse({"client-resources": {"num-gpus": 2}}, max_workers=100)
    assert both == BackendConfig(1, ("0,1",), num_gpus=2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(InvalidArgument, match="no GPU is visible"):
        BackendConfig.parse({"client-resources": {"num-gpus": 1}}, max_workers=100)
    zero = BackendConfig.parse({"client-resources": {"num-gpus": 0}}, max_workers=100)
    assert zero == BackendConfig(16)  # 0 GPUs: ignored


def test_an_app_a_script_imported_from_a_module_travels_as_that_module(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = types.ModuleType("__main__")
    script.__file__ = str(tmp_path / "experiment.py")
    script.client = sim_apps.app  # type: ignore[attr-defined]  # `from sim_apps import app as client`
    monkeypatch.setitem(sys.modules, "__main__", script)
    monkeypatch.setitem(sys.modules, "__mp_main__", script)  # multiprocessing's alias
    assert ClientAppSource.from_app(sim_apps.app) == ClientAppSource("sim_apps:app")
    only_in_script = ClientApp()
    script.local = only_in_script  # type: ignore[attr-defined]
    source = ClientAppSource.from_app(only_in_script)
    assert source.script == script.__file__
    assert source.reference.endswith(":local")
