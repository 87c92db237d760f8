"""Delivery against a real SuperLink: one run's slow download does not hold up another run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from real_superlink import reply_to, running_run, send, start_superlink
from supernode_fakes import make_fab, wait_for

from corolla.superlink.link import SuperLink
from corolla.supernode.config import SuperNodeConfig
from corolla.supernode.domain import Fab
from corolla.supernode.node import SuperNode


@pytest.fixture
def link() -> Iterator[SuperLink]:
    started = start_superlink()
    yield started
    started.stop()


def test_a_slow_fab_download_of_one_run_does_not_delay_another_run(
    link: SuperLink, tmp_path: Path
) -> None:
    fab = make_fab(tmp_path / "apps")
    slow_run, quick_run = running_run(link, fab), running_run(link, fab)
    node = SuperNode(
        SuperNodeConfig(
            superlink=link.addresses["fleet"],
            clientappio_address="127.0.0.1:0",
            heartbeat_interval=0.5,
            max_wait=1.0,
        )
    )
    release = threading.Event()
    slow_started = threading.Event()
    get_fab = node._conn.get_fab

    def slow_get_fab(node_id: int, run_id: int, fab_hash: str) -> Fab:
        if run_id == slow_run:
            slow_started.set()
            assert release.wait(60), "the test never released the slow download"
        return get_fab(node_id, run_id, fab_hash)

    node._conn.get_fab = slow_get_fab  # type: ignore[method-assign]
    node.start()
    try:
        assert wait_for(lambda: node.node_id != 0, 20)
        slow_id = send(link, slow_run, node.node_id)
        assert slow_started.wait(20), "the slow run's FAB was never fetched"
        quick_id = send(link, quick_run, node.node_id)
        reply = reply_to(link, quick_run, quick_id, timeout=60)
        assert not reply.has_error()
        assert not release.is_set()  # it arrived while the other run was still downloading
        assert link.state.pull_replies(slow_run, [slow_id]) == []
        release.set()
        assert not reply_to(link, slow_run, slow_id, timeout=60).has_error()
    finally:
        release.set()
        node.stop()


def test_every_message_of_a_run_is_answered_and_its_worker_ends_when_idle(
    link: SuperLink, tmp_path: Path
) -> None:
    fab = make_fab(tmp_path / "apps")
    run_id = running_run(link, fab)
    node = SuperNode(
        SuperNodeConfig(
            superlink=link.addresses["fleet"],
            clientappio_address="127.0.0.1:0",
            heartbeat_interval=0.5,
            max_wait=1.0,
        )
    )
    node.start()
    try:
        assert wait_for(lambda: node.node_id != 0, 20)
        ids = [send(link, run_id, node.node_id) for _ in range(3)]
        for message_id in ids:
            assert not reply_to(link, run_id, message_id, timeout=60).has_error()
        assert wait_for(lambda: node._intake.busy_runs() == [], 10)  # workers end when idle
    finally:
        node.stop()
