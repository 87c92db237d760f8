"""A SuperNode (in this process) against a fake Fleet API, with real `flwr-clientapp` processes."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from supernode_fakes import FakeFleet, make_fab, pid_gone, serve_fleet, wait_for

from corolla.records import ErrorCode
from corolla.supernode.config import SuperNodeConfig
from corolla.supernode.node import SuperNode

pytestmark = pytest.mark.timeout(60)

StartNode = Callable[..., SuperNode]


def test_warm_process_serves_a_run_and_keeps_its_state(
    fleet: FakeFleet, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    fleet.add_run(7, *app_fab)
    node = start_node()
    node_id = fleet.wait_node()
    assert node.node_id == node_id

    started = time.monotonic()
    first = fleet.reply_to(fleet.send(7, node_id))
    second_id = fleet.send(7, node_id)
    t0 = time.monotonic()
    second = fleet.reply_to(second_id)
    warm_latency = time.monotonic() - t0

    assert not first.has_error() and not second.has_error()
    assert first.content["out"]["count"] == 1
    assert second.content["out"]["count"] == 2  # context state persisted
    assert first.content["out"]["pid"] == second.content["out"]["pid"]  # same warm process
    assert dict(first.content["node"]) == {"partition-id": 1, "dataset": "mnist"}
    assert dict(first.content["run"]) == {"lr": 0.5}
    assert second.metadata.src_node_id == node_id
    assert fleet.get_run_calls == 1  # run and FAB fetched once per run
    assert warm_latency < 1.0, f"warm message took {warm_latency:.3f} s"
    state = node._runs.get(7)
    assert state is not None and state.process is not None
    cmdline = Path(f"/proc/{state.process.pid}/cmdline").read_bytes()
    assert state.token.encode() not in cmdline  # the token travels in the environment
    assert (
        f"COROLLA_APP_TOKEN={state.token}".encode()
        in Path(f"/proc/{state.process.pid}/environ").read_bytes()
    )
    assert time.monotonic() - started < 20


def test_large_arrays_travel_as_objects_both_ways(
    fleet: FakeFleet, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    fleet.add_run(8, *app_fab)
    start_node()
    node_id = fleet.wait_node()
    weights = np.arange(100_000, dtype=np.float32)  # 400 kB: above the inline limit
    reply = fleet.reply_to(fleet.send(8, node_id, arrays=[weights]))
    assert not reply.has_error(), reply
    (doubled,) = reply.content["arrays"].to_numpy_ndarrays()
    np.testing.assert_array_equal(doubled, weights * 2)


def test_app_output_reaches_the_superlink_with_the_node_prefix(
    fleet: FakeFleet, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    fleet.add_run(9, *app_fab)
    start_node()
    node_id = fleet.wait_node()
    fleet.reply_to(fleet.send(9, node_id))
    expected = f"[node {node_id}] INFO testapp: handled message 1"
    assert wait_for(lambda: expected in fleet.log_lines()), fleet.log_lines()


def test_a_raising_clientapp_gives_an_error_reply(
    fleet: FakeFleet, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    fleet.add_run(10, *app_fab)
    start_node()
    node_id = fleet.wait_node()
    reply = fleet.reply_to(fleet.send(10, node_id, action="raise"))
    assert reply.has_error()
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "boom from the app" in reply.error.reason
    assert not fleet.reply_to(fleet.send(10, node_id)).has_error()  # the process lives on


def test_killed_clientapp_process_yields_an_error_reply_and_the_next_message_works(
    fleet: FakeFleet, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    fleet.add_run(11, *app_fab)
    start_node()
    node_id = fleet.wait_node()
    first = fleet.reply_to(fleet.send(11, node_id))
    pid = first.content["out"]["pid"]

    hanging = fleet.send(11, node_id, action="hang")
    assert wait_for(lambda: any("hanging now" in line for line in fleet.log_lines()), 15)
    os.kill(pid, signal.SIGKILL)
    failed = fleet.reply_to(hanging)
    assert failed.has_error()
    assert "ClientApp process exited with code -9" in failed.error.reason

    after = fleet.reply_to(fleet.send(11, node_id))
    assert not after.has_error()
    assert after.content["out"]["pid"] != pid
    assert after.content["out"]["count"] == 2  # state pushed after message 1 survived
    assert pid_gone(pid)


def test_app_import_error_is_answered_and_logged(
    fleet: FakeFleet, start_node: StartNode, tmp_path: Path
) -> None:
    fab = make_fab(tmp_path, "import not_a_real_module_xyz\n", name="brokenapp")
    fleet.add_run(12, *fab)
    start_node()
    node_id = fleet.wait_node()
    reply = fleet.reply_to(fleet.send(12, node_id))
    assert reply.has_error()
    assert reply.error.code == ErrorCode.LOAD_CLIENT_APP_EXCEPTION
    assert "not_a_real_module_xyz" in reply.error.reason
    assert wait_for(
        lambda: any(
            line.startswith(f"[node {node_id}]") and "cannot be loaded" in line
            for line in fleet.log_lines()
        )
    ), fleet.log_lines()


def test_finished_run_stops_its_process(
    fleet: FakeFleet, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    fleet.add_run(13, *app_fab)
    node = start_node()
    node_id = fleet.wait_node()
    pid = fleet.reply_to(fleet.send(13, node_id)).content["out"]["pid"]
    assert wait_for(lambda: any(13 in hb.active_run_ids for hb in fleet.heartbeats))
    fleet.finished.add(13)
    assert wait_for(lambda: pid_gone(pid), 10)
    assert wait_for(lambda: node._runs.get(13) is None)


def test_node_registers_again_with_its_id_when_the_superlink_forgets_it(
    fleet: FakeFleet, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    fleet.add_run(14, *app_fab)
    start_node()
    node_id = fleet.wait_node()
    fleet.forget_nodes()
    assert wait_for(lambda: node_id in fleet.nodes, 10)
    assert fleet.create_requests[-1].requested_node_id == node_id
    assert not fleet.reply_to(fleet.send(14, node_id)).has_error()


def test_node_registers_by_itself_once_the_superlink_comes_up(app_fab: tuple[bytes, str]) -> None:
    with socket.socket() as probe:  # a free port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fleet = FakeFleet()
    node = SuperNode(
        SuperNodeConfig(
            superlink=f"127.0.0.1:{port}",
            clientappio_address="127.0.0.1:0",
            heartbeat_interval=0.3,
            max_wait=1.0,
        )
    )
    node.start()
    server = None
    try:
        time.sleep(1.2)
        assert node.node_id == 0
        server = serve_fleet(fleet, f"127.0.0.1:{port}")
        assert wait_for(lambda: node.node_id != 0, 20), "the node did not register"
        fleet.add_run(15, *app_fab)
        assert not fleet.reply_to(fleet.send(15, node.node_id)).has_error()
    finally:
        node.stop()
        if server is not None:
            server.stop(0).wait(5)


def test_process_dying_before_taking_work_fails_the_message_without_a_restart_loop(
    fleet: FakeFleet, start_node: StartNode, tmp_path: Path
) -> None:
    fab = make_fab(tmp_path, "import os\nos._exit(3)\n", name="exitapp")
    fleet.add_run(16, *fab)
    node = start_node()
    node_id = fleet.wait_node()
    reply = fleet.reply_to(fleet.send(16, node_id))
    assert reply.has_error()
    assert reply.error.reason == "ClientApp process exited with code 3"
    state = node._runs.get(16)
    assert state is not None and state.process is None and not state.queue  # not restarted


def test_message_of_an_unknown_run_gets_an_error_reply(
    fleet: FakeFleet, start_node: StartNode
) -> None:
    start_node()
    node_id = fleet.wait_node()
    reply = fleet.reply_to(fleet.send(404, node_id))
    assert reply.has_error()
    assert reply.error.code == ErrorCode.MESSAGE_UNAVAILABLE
    assert "run 404 not found" in reply.error.reason
