"""A SuperNode (in this process) against a real SuperLink, with real `flwr-clientapp` processes.

Delivery semantics are the SuperLink's own: each instruction is handed out once, replies are
stored against the instruction they answer, a finished run is reported by heartbeat and pull,
a node the SuperLink lost re-registers, and a node that goes silent is marked offline.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from real_superlink import Link
from supernode_fakes import make_fab, pid_gone, wait_for

from corolla.proto.v1 import fleet_pb2 as fpb
from corolla.records import ErrorCode
from corolla.supernode import connection
from corolla.supernode.config import SuperNodeConfig
from corolla.supernode.connection import NodeStream
from corolla.supernode.node import SuperNode

pytestmark = pytest.mark.timeout(60)

StartNode = Callable[..., SuperNode]


def count_calls(node: SuperNode, name: str) -> list[tuple[object, ...]]:
    """Record the arguments of every call of the node's ``FleetConnection.<name>``."""
    calls: list[tuple[object, ...]] = []
    real = getattr(node._conn, name)

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return real(*args, **kwargs)

    setattr(node._conn, name, spy)
    return calls


def streaming(link: Link, node: SuperNode) -> int:
    """The node's id, once the SuperLink has it and the node's stream is open."""
    node_id = link.wait_node()
    assert wait_for(lambda: node._stream is not None, 10)
    return node_id


def test_warm_process_serves_a_run_and_keeps_its_state(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    run_id = link.add_run(app_fab)
    # A process started for its run (the spare's path: test_supernode_spare.py).
    node = start_node(spare_app_process=False)
    get_runs = count_calls(node, "get_run")
    node_id = link.wait_node()
    assert wait_for(lambda: node.node_id == node_id, 10)

    first = link.reply_to(link.send(run_id, node_id))
    second = link.reply_to(link.send(run_id, node_id))

    assert not first.has_error() and not second.has_error()
    assert first.content["out"]["count"] == 1
    assert second.content["out"]["count"] == 2  # context state persisted
    assert first.content["out"]["pid"] == second.content["out"]["pid"]  # same warm process
    assert dict(first.content["node"]) == {"partition-id": 1, "dataset": "mnist"}
    assert dict(first.content["run"]) == {"lr": 0.5}
    assert second.metadata.src_node_id == node_id
    assert len(get_runs) == 1  # run and FAB fetched once per run
    state = node._runs.get(run_id)
    assert state is not None and state.process is not None
    cmdline = Path(f"/proc/{state.process.pid}/cmdline").read_bytes()
    assert state.token.encode() not in cmdline  # the token travels in the environment
    assert (
        f"COROLLA_APP_TOKEN={state.token}".encode()
        in Path(f"/proc/{state.process.pid}/environ").read_bytes()
    )


@pytest.mark.parametrize("pull_mode", ["stream", "poll"])
def test_each_message_is_delivered_and_answered_once(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str], pull_mode: str
) -> None:
    run_id = link.add_run(app_fab)
    start_node(pull_mode=pull_mode)
    node_id = link.wait_node()
    ids = [link.send(run_id, node_id) for _ in range(4)]
    counts = sorted(link.reply_to(message_id).content["out"]["count"] for message_id in ids)
    assert counts == [1, 2, 3, 4]  # every message reached the app exactly once
    assert [link.replies_to(message_id) for message_id in ids] == [1, 1, 1, 1]
    assert link.state.pull_instructions(node_id, 10) == []  # nothing is handed out again


def test_large_arrays_travel_as_objects_both_ways_and_are_fetched_once(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    run_id = link.add_run(app_fab)
    node = start_node()
    pulls = count_calls(node, "pull_objects")
    node_id = link.wait_node()
    weights = np.arange(100_000, dtype=np.float32)  # 400 kB: above the inline limit
    reply = link.reply_to(link.send(run_id, node_id, arrays=[weights]))
    assert not reply.has_error(), reply
    (doubled,) = reply.content["arrays"].to_numpy_ndarrays()
    np.testing.assert_array_equal(doubled, weights * 2)
    fetched = [oid for call in pulls for oid in call[2]]  # type: ignore[attr-defined]
    assert len(fetched) == 1 and len(set(fetched)) == 1  # the one object, fetched once


def test_the_next_message_reuses_the_objects_of_the_one_answered_last(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    """A strategy evaluates the model it then trains: the node keeps the last message's
    objects (on disk) so the next one carrying them again fetches nothing; a next message
    that does not carry them lets them go before its own objects arrive."""
    run_id = link.add_run(app_fab)
    node = start_node()
    pulls = count_calls(node, "pull_objects")
    held_then: list[list[str]] = []  # what the node held as each fetch began
    spy = node._conn.pull_objects

    def recording(*args: object) -> object:
        state = node._runs.get(run_id)
        held_then.append(state.objects.ids() if state is not None else [])
        return spy(*args)

    node._conn.pull_objects = recording  # type: ignore[method-assign]
    node_id = link.wait_node()
    model, other = np.arange(100_000, dtype=np.float32), np.ones(100_000, dtype=np.float32)
    for arrays in ([model], [model], [other]):
        assert not link.reply_to(link.send(run_id, node_id, arrays=arrays)).has_error()
    fetched = [oid for call in pulls for oid in call[2]]  # type: ignore[attr-defined]
    assert len(fetched) == 2  # model once (reused by the second message), then other
    assert held_then[1] == []  # the model went before the next one came: never both on disk
    state = node._runs.get(run_id)
    assert state is not None
    held = state.objects.ids()
    assert fetched[1] in held and fetched[0] not in held  # the model is released now
    files = [p for p in node._objects.root.rglob("*") if p.is_file()]
    assert len(files) == len(held)  # each held object is one file, nothing else is left
    node.stop()
    assert not node._objects.root.exists()  # stopping removes the node's objects


def test_app_output_reaches_the_superlink_with_the_node_prefix(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    run_id = link.add_run(app_fab)
    start_node()
    node_id = link.wait_node()
    link.reply_to(link.send(run_id, node_id))
    expected = f"[node {node_id}] INFO testapp: handled message 1"
    assert wait_for(lambda: expected in link.log_lines()), link.log_lines()


def test_a_raising_clientapp_gives_an_error_reply(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    run_id = link.add_run(app_fab)
    start_node()
    node_id = link.wait_node()
    reply = link.reply_to(link.send(run_id, node_id, action="raise"))
    assert reply.has_error()
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "boom from the app" in reply.error.reason
    assert not link.reply_to(link.send(run_id, node_id)).has_error()  # the process lives on


def test_killed_clientapp_process_yields_an_error_reply_and_the_next_message_works(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    run_id = link.add_run(app_fab)
    start_node()
    node_id = link.wait_node()
    first = link.reply_to(link.send(run_id, node_id))
    pid = first.content["out"]["pid"]

    hanging = link.send(run_id, node_id, action="hang")
    assert wait_for(lambda: any("hanging now" in line for line in link.log_lines()), 15)
    os.kill(pid, signal.SIGKILL)
    failed = link.reply_to(hanging)
    assert failed.has_error()
    assert "ClientApp process exited with code -9" in failed.error.reason

    after = link.reply_to(link.send(run_id, node_id))
    assert not after.has_error()
    assert after.content["out"]["pid"] != pid
    assert after.content["out"]["count"] == 2  # state pushed after message 1 survived
    assert pid_gone(pid)


def test_app_import_error_is_answered_and_logged(
    link: Link, start_node: StartNode, tmp_path: Path
) -> None:
    run_id = link.add_run(make_fab(tmp_path, "import not_a_real_module_xyz\n", name="brokenapp"))
    start_node()
    node_id = link.wait_node()
    reply = link.reply_to(link.send(run_id, node_id))
    assert reply.has_error()
    assert reply.error.code == ErrorCode.LOAD_CLIENT_APP_EXCEPTION
    assert "not_a_real_module_xyz" in reply.error.reason
    assert wait_for(
        lambda: any(
            line.startswith(f"[node {node_id}]") and "cannot be loaded" in line
            for line in link.log_lines()
        )
    ), link.log_lines()


@pytest.mark.parametrize("pull_mode", ["stream", "poll"])
def test_finished_run_stops_its_process(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str], pull_mode: str
) -> None:
    run_id = link.add_run(app_fab)
    node = start_node(pull_mode=pull_mode)
    node_id = link.wait_node()
    pid = link.reply_to(link.send(run_id, node_id)).content["out"]["pid"]
    link.finish(run_id)
    assert wait_for(lambda: pid_gone(pid), 10)
    assert wait_for(lambda: node._runs.get(run_id) is None)


def test_a_stopping_node_answers_the_message_it_holds_with_node_unavailable(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    run_id = link.add_run(app_fab)
    node = start_node()
    node_id = link.wait_node()
    hanging = link.send(run_id, node_id, action="hang")
    assert wait_for(lambda: any("hanging now" in line for line in link.log_lines()), 15)
    node.stop()
    reply = link.reply_to(hanging)
    assert reply.has_error()
    assert reply.error.code == ErrorCode.NODE_UNAVAILABLE
    assert reply.error.reason == "the SuperNode stopped"  # the node's own answer, not a loss
    assert node_id not in link.online()  # it signed off


def test_a_silent_node_is_marked_offline_and_its_heartbeat_brings_it_back(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    run_id = link.add_run(app_fab)
    start_node()
    node_id = link.wait_node()
    link.advance(3600)  # by the SuperLink's clock the node has been silent for an hour
    assert node_id not in link.online()
    assert wait_for(lambda: node_id in link.online(), 10)  # the next heartbeat
    assert not link.reply_to(link.send(run_id, node_id)).has_error()


def test_heartbeats_travel_on_the_open_stream(link: Link, start_node: StartNode) -> None:
    node = start_node()
    node_id = streaming(link, node)
    calls = count_calls(node, "heartbeat")  # the Heartbeat call, used while no stream is open
    link.advance(3600)  # silent for an hour by the SuperLink's clock: offline
    assert node_id not in link.online()
    assert wait_for(lambda: node_id in link.online(), 10)  # a heartbeat on the stream
    assert calls == []


def test_replies_travel_on_the_open_stream(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    run_id = link.add_run(app_fab)
    node = start_node()
    node_id = streaming(link, node)
    calls = count_calls(node, "push_messages")  # the PushMessages call
    ids = [link.send(run_id, node_id) for _ in range(3)]
    assert all(not link.reply_to(message_id).has_error() for message_id in ids)
    assert calls == []


def test_a_cut_stream_is_opened_again_and_work_still_arrives(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    run_id = link.add_run(app_fab)
    node = start_node()
    node_id = streaming(link, node)
    first = node._stream
    assert first is not None
    first.cancel()  # as a connection cut by the network would end it
    assert wait_for(lambda: node._stream not in (None, first), 10)
    assert not link.reply_to(link.send(run_id, node_id)).has_error()


def test_node_registers_again_with_its_id_when_the_superlink_forgets_it(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    run_id = link.add_run(app_fab)
    node = start_node()
    node_id = link.wait_node()
    registrations = count_calls(node, "create_node")
    link.forget_node(node_id)
    # It registers again by itself (no check that it is offline in between: it may be back
    # before any such check could run).
    # (The node learns its id from the answer: the SuperLink may list it online just before.)
    assert wait_for(
        lambda: registrations and node_id in link.online() and node.node_id == node_id, 10
    )
    assert not link.reply_to(link.send(run_id, node_id)).has_error()


def test_node_registers_by_itself_once_the_superlink_comes_up(app_fab: tuple[bytes, str]) -> None:
    with socket.socket() as probe:  # a free port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = SuperNode(
        SuperNodeConfig(
            superlink=f"127.0.0.1:{port}",
            clientappio_address="127.0.0.1:0",
            heartbeat_interval=0.3,
            max_wait=1.0,
        )
    )
    attempts = count_calls(node, "create_node")
    node.start()
    link = None
    try:
        assert wait_for(lambda: len(attempts) >= 2, 20), "the node did not retry"
        assert node.node_id == 0
        link = Link(f"127.0.0.1:{port}")
        assert wait_for(lambda: node.node_id != 0, 30), "the node did not register"
        assert link.online() == [node.node_id]
        run_id = link.add_run(app_fab)
        assert not link.reply_to(link.send(run_id, node.node_id)).has_error()
    finally:
        node.stop()
        if link is not None:
            link.stop()


def test_process_dying_before_taking_work_fails_the_message_without_a_restart_loop(
    link: Link, start_node: StartNode, tmp_path: Path
) -> None:
    run_id = link.add_run(make_fab(tmp_path, "import os\nos._exit(3)\n", name="exitapp"))
    node = start_node()
    node_id = link.wait_node()
    reply = link.reply_to(link.send(run_id, node_id))
    assert reply.has_error()
    assert reply.error.reason == "ClientApp process exited with code 3"
    state = node._runs.get(run_id)
    assert state is not None and state.process is None and not state.queue  # not restarted


def test_message_of_an_unknown_run_gets_an_error_reply(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    run_id = link.add_run(app_fab)
    node = start_node()
    node_id = link.wait_node()
    get_run = node._conn.get_run

    def lost_run(node_id: int, wanted: int) -> object:
        return get_run(node_id, wanted + 1000)  # a run the SuperLink does not know

    node._conn.get_run = lost_run  # type: ignore[assignment]
    reply = link.reply_to(link.send(run_id, node_id))
    assert reply.has_error()
    assert reply.error.code == ErrorCode.MESSAGE_UNAVAILABLE
    assert f"run {run_id + 1000}" in reply.error.reason


def test_a_quick_reply_carries_the_acknowledgement_of_its_instruction(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "ACK_DELAY", 3600.0)  # never due: only a reply can carry it
    sent: list[fpb.NodeUp] = []
    real = NodeStream.requests

    def recording(self: NodeStream) -> Iterator[fpb.NodeUp]:
        for up in real(self):
            sent.append(up)
            yield up

    monkeypatch.setattr(NodeStream, "requests", recording)
    run_id = link.add_run(app_fab)
    start_node()
    node_id = link.wait_node()
    message_id = link.send(run_id, node_id)
    assert not link.reply_to(message_id).has_error()
    assert link.state.pull_instructions(node_id, 10) == []  # acknowledged: by its reply
    answered = [r.metadata.reply_to_message_id for up in sent for r in up.replies]
    assert answered == [message_id]  # up the stream, once
    assert not any(up.ack_message_ids for up in sent)  # one message up, not two
