"""The Ray backend: the same replies as the built-in one, its errors, and no Ray left behind.

One local Ray instance (2 CPUs, loopback only) serves the whole module; the pools find it
initialized and leave it running, the fixture shuts it down and checks its processes are gone.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sim_apps

from corolla.app import ArrayRecord, ConfigRecord, Context, ErrorCode, Message, RecordDict
from corolla.common.errors import FailedPrecondition, InvalidArgument
from corolla.serverapp.serverapp import ServerApp
from corolla.simulation import SimulationGrid, run_simulation
from corolla.simulation._resources import BackendConfig
from corolla.simulation.backend import ClientAppSource, Task, TaskResult
from corolla.simulation.ray_backend import ray_children, start_ray, stop_ray

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

APPS = str(Path(sim_apps.__file__).parent)
RAY = {"name": "ray", "num-workers": 2}


def descendants() -> set[int]:
    """Process ids below this process (from /proc: Linux), multiprocessing's tracker aside."""
    found: set[int] = set()
    frontier = sim_apps.child_pids()
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except OSError:
                continue
    while frontier:
        found |= frontier
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
    return found


@pytest.fixture(scope="module", autouse=True)
def ray_instance() -> Iterator[Any]:
    before = descendants()
    started: list[Any] = []
    ray_processes = ray_children(  # loopback only, no usage stats
        lambda: started.append(start_ray({"num_cpus": 2, "log_to_driver": False}))
    )
    ray = started[0]
    try:
        yield ray
    finally:
        stop_ray(ray, ray_processes)
        deadline = time.monotonic() + 20
        while descendants() - before and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {pid: command_line(pid) for pid in descendants() - before}
        assert left == {}, f"processes are left running: {left}"


def command_line(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())[:200]
    except OSError:
        return "(gone)"


def message(node_id: int, message_type: str = "train", **config: object) -> Message:
    content = RecordDict({"config": ConfigRecord(dict(config))}) if config else RecordDict()
    return Message(content, dst_node_id=node_id, message_type=message_type)


def rounds(grid: SimulationGrid) -> list[tuple[int, int, int, list[float]]]:
    """Three rounds of a broadcast model to every node: (node, round, n, returned array)."""
    arrays = ArrayRecord({"w": np.arange(50_000, dtype=np.float32)})
    seen = []
    for server_round, kind in enumerate(["train", "evaluate", "query"], start=1):
        sent = [
            Message(RecordDict({"arrays": arrays}), dst_node_id=n, message_type=kind)
            for n in grid.get_node_ids()
        ]
        for reply in grid.send_and_receive(sent, timeout=60):
            metrics = reply.content["metrics"]
            back = reply.content["arrays"]["w"].numpy()
            seen.append(
                (int(metrics["node-id"]), server_round, int(metrics["n"]), back[:3].tolist())
            )
    return sorted(seen)


def test_ray_gives_the_replies_and_contexts_of_the_local_backend() -> None:
    with SimulationGrid(sim_apps.app, 5, backend_config={"num-workers": 2}) as local:
        expected = rounds(local)
        local_counts = {n: local.context(n).state["counter"]["n"] for n in local.get_node_ids()}
    with SimulationGrid(sim_apps.app, 5, backend_config=RAY) as grid:
        assert grid.num_workers == 2 and grid.wait_ready(60)
        got = rounds(grid)
        counts = {n: grid.context(n).state["counter"]["n"] for n in grid.get_node_ids()}
        assert grid._pool._refs == {}  # type: ignore[attr-defined]  # no task needs the model
    assert got == expected
    assert [n for _, r, n, _ in got if r == 3] == [3] * 5  # contexts persisted across rounds
    assert counts == local_counts == {n: 3 for n in range(1, 6)}


def test_a_raising_clientapp_gives_the_error_reply_of_the_local_backend() -> None:
    sent = message(2, **{"raise": True})
    with SimulationGrid(sim_apps.app, 2, backend_config=RAY) as grid:
        (reply,) = grid.send_and_receive([sent], timeout=60)
    expected = sim_apps.app(sent, Context(run_id=1, node_id=2))
    assert reply.error.code == expected.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert reply.error.reason == expected.error.reason


def test_a_clientapp_that_cannot_load_answers_every_message_with_the_load_error() -> None:
    source = ClientAppSource.from_reference("sim_apps:missing", APPS)
    with SimulationGrid(source, 3, backend_config=RAY) as grid:
        assert grid.wait_ready(60)
        replies = grid.send_and_receive([message(n) for n in (1, 2, 3)], timeout=60)
    assert len(replies) == 3
    for reply in replies:
        assert reply.error.code == ErrorCode.LOAD_CLIENT_APP_EXCEPTION
        assert (
            "ClientApp cannot be loaded" in reply.error.reason and "missing" in reply.error.reason
        )


def test_a_dead_actor_fails_its_task_and_is_replaced(tmp_path: Path) -> None:
    from corolla.simulation.ray_backend import RayPool

    results: list[TaskResult] = []
    got = threading.Condition()

    def on_result(result: TaskResult) -> None:
        with got:
            results.append(result)
            got.notify_all()

    with SimulationGrid(sim_apps.app, 1, backend_config=RAY) as grid:  # for encoded tasks
        context = grid._context_bytes(1)  # type: ignore[attr-defined]
    from corolla.records.wire import encode_messages

    protos, _ = encode_messages([message(1, sleep=30.0, **{"pid-file": str(tmp_path / "p")})])
    slow = Task("slow", protos[0].SerializeToString(), context)
    protos, _ = encode_messages([message(1)])
    quick = Task("quick", protos[0].SerializeToString(), context)
    config = BackendConfig(1, name="ray")
    with RayPool(ClientAppSource.from_reference("sim_apps:app", APPS), on_result, config) as pool:
        assert pool.wait_ready(60)
        pool.submit(slow)
        pool.submit(quick)
        deadline = time.monotonic() + 30
        while not (tmp_path / "p").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not pool.cancel("slow")  # running
        pool._ray.kill(pool._actors[0])  # type: ignore[attr-defined]
        with got:
            assert got.wait_for(lambda: len(results) == 2, timeout=60)
    by_id = {r.task_id: r for r in results}
    assert by_id["slow"].error is not None
    assert by_id["slow"].error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert by_id["slow"].error.reason.startswith("ClientApp process exited")
    assert by_id["quick"].error is None and by_id["quick"].reply  # the fresh actor answered


def test_an_unknown_backend_name_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="unknown simulation backend 'spark'"):
        SimulationGrid(sim_apps.app, 2, backend_config={"name": "spark"})


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(FailedPrecondition, match=r"pip install 'corolla\[simulation\]'"):
        SimulationGrid(sim_apps.app, 2, backend_config=RAY)


server_app = ServerApp()


@server_app.main()
def main(grid: Any, context: Context) -> None:
    for _ in range(2):
        replies = grid.send_and_receive([message(n) for n in grid.get_node_ids()], timeout=60)
        context.state["counts"] = ConfigRecord(
            {"n": sorted(int(r.content["metrics"]["n"]) for r in replies)}
        )


def test_run_simulation_on_ray() -> None:
    config = {"name": "ray", "init-args": {"num_cpus": 2}, "client-resources": {"num-cpus": 1}}
    context = run_simulation(
        server_app=server_app, client_app=sim_apps.app, num_supernodes=4, backend_config=config
    )
    assert context.state["counts"]["n"] == [2, 2, 2, 2]


def test_the_local_ray_instance_is_on_loopback_and_reports_no_usage(ray_instance: Any) -> None:
    assert ray_instance.util.get_node_ip_address() == "127.0.0.1"
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
