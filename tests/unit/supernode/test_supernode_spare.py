"""A SuperNode's spare flwr-clientapp (isolation subprocess): ready before a run, the run's
process once taken, replaced for the next run, reaped with the node; the option turns it off.
A real SuperLink in this process and real app processes."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from real_superlink import Link
from supernode_fakes import pid_gone, wait_for

from corolla.common.appio import TOKEN_ENV
from corolla.supernode.node import SuperNode

pytestmark = pytest.mark.timeout(90)

StartNode = Callable[..., SuperNode]


def spare_pid(node: SuperNode, other_than: int = 0) -> int:
    assert node._spares is not None
    spares = node._spares
    assert wait_for(lambda: spares.pid not in (None, other_than), 30), "no spare ClientApp"
    pid = spares.pid
    assert pid is not None
    return pid


def test_each_run_is_served_by_the_spare_that_was_ready_before_it(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    node = start_node()
    node_id = link.wait_node()
    first_spare = spare_pid(node)
    assert os.readlink(f"/proc/{first_spare}/fd/0").startswith("pipe:")  # waiting for a run

    first_run = link.add_run(app_fab)
    reply = link.reply_to(link.send(first_run, node_id))
    assert not reply.has_error(), reply
    assert reply.content["out"]["pid"] == first_spare  # the spare served the run
    state = node._runs.get(first_run)
    assert state is not None and state.process is not None
    assert state.process.pid == first_spare
    for name in ("cmdline", "environ"):  # the token came down the pipe, in neither
        assert state.token.encode() not in Path(f"/proc/{first_spare}/{name}").read_bytes()
    again = link.reply_to(link.send(first_run, node_id))
    assert again.content["out"]["pid"] == first_spare  # and stays the run's warm process
    assert again.content["out"]["count"] == 2

    second_spare = spare_pid(node, other_than=first_spare)  # started once the first was taken
    second_run = link.add_run(app_fab)
    other = link.reply_to(link.send(second_run, node_id))
    assert not other.has_error(), other
    assert other.content["out"]["pid"] == second_spare != first_spare  # a new process per run
    assert other.content["out"]["count"] == 1  # nothing of the first run's state
    third_spare = spare_pid(node, other_than=second_spare)

    node.stop()
    for pid in (first_spare, second_spare, third_spare):
        assert pid_gone(pid), f"process {pid} outlived the node"


def test_a_killed_spare_is_replaced_and_the_run_still_gets_a_process(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    node = start_node()
    node_id = link.wait_node()
    killed = spare_pid(node)
    os.kill(killed, signal.SIGKILL)
    replacement = spare_pid(node, other_than=killed)
    reply = link.reply_to(link.send(link.add_run(app_fab), node_id))
    assert not reply.has_error(), reply
    assert reply.content["out"]["pid"] == replacement


def test_no_spare_with_the_option_off(
    link: Link, start_node: StartNode, app_fab: tuple[bytes, str]
) -> None:
    node = start_node(spare_app_process=False)
    assert node._spares is None
    node_id = link.wait_node()
    run_id = link.add_run(app_fab)
    reply = link.reply_to(link.send(run_id, node_id))
    state = node._runs.get(run_id)
    assert state is not None and state.process is not None
    assert reply.content["out"]["pid"] == state.process.pid
    # A process started for its run: the token in its environment, as before spares.
    environ = Path(f"/proc/{state.process.pid}/environ").read_bytes()
    assert f"{TOKEN_ENV}={state.token}".encode() in environ
