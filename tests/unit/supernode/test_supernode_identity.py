"""A restarted SuperNode keeps its node id (node id file), and says when it is ready."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from real_superlink import start_superlink
from supernode_fakes import wait_for

from corolla.common.config import write_ready_file
from corolla.superlink.link import SuperLink
from corolla.supernode.config import SuperNodeConfig
from corolla.supernode.identity import NodeIdFile
from corolla.supernode.node import SuperNode

LINK = "127.0.0.1:9092"


@pytest.fixture
def link() -> Iterator[SuperLink]:
    started = start_superlink()
    yield started
    started.stop()


def run_node(link: SuperLink, **settings: object) -> SuperNode:
    config = SuperNodeConfig(
        superlink=link.addresses["fleet"],
        clientappio_address="127.0.0.1:0",
        heartbeat_interval=0.5,
        max_wait=1.0,
        **settings,  # type: ignore[arg-type]
    )
    node = SuperNode(config)
    node.start()
    assert wait_for(lambda: node.node_id != 0, 20), "the node did not register"
    return node


def test_a_new_file_is_written_atomically_private_and_with_parents(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "node.json"
    ids = NodeIdFile(path, LINK)
    assert ids.claim() == 0 and ids.owned
    ids.save(77)
    assert json.loads(path.read_text()) == {"node_id": 77, "superlink": LINK}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["node.json", "node.json.lock"]
    ids.release()


def test_the_kept_id_is_asked_for_only_at_the_same_superlink(tmp_path: Path) -> None:
    path = tmp_path / "node.json"
    write_ready_file(path, {"node_id": 42, "superlink": LINK})
    same = NodeIdFile(path, LINK)
    assert same.claim() == 42
    same.release()
    other = NodeIdFile(path, "10.0.0.1:9092")
    assert other.claim() == 0
    other.release()


@pytest.mark.parametrize("text", ["{not json", '{"node_id": "x"}', '{"node_id": -3}', "[1]"])
def test_a_broken_file_is_ignored(tmp_path: Path, text: str) -> None:
    path = tmp_path / "node.json"
    path.write_text(text)
    ids = NodeIdFile(path, LINK)
    assert ids.claim() == 0
    ids.save(5)  # and replaced by the id the node gets
    assert json.loads(path.read_text())["node_id"] == 5
    ids.release()


def test_a_second_node_sharing_the_file_neither_asks_for_nor_writes_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "node.json"
    write_ready_file(path, {"node_id": 42, "superlink": LINK})
    first, second = NodeIdFile(path, LINK), NodeIdFile(path, LINK)
    assert first.claim() == 42
    with caplog.at_level(logging.WARNING):
        assert second.claim() == 0
    assert not second.owned and "in use by another SuperNode" in caplog.text
    second.save(99)
    assert json.loads(path.read_text())["node_id"] == 42
    first.release()
    assert second.claim() == 42  # free again once the first let go
    second.release()


def test_a_restarted_node_gets_its_id_back(link: SuperLink, tmp_path: Path) -> None:
    path = tmp_path / "state" / "node-id.json"
    node = run_node(link, node_id_file=path)
    try:
        first_id = node.node_id
        assert wait_for(path.exists, 10)  # written just after the id is known
        assert json.loads(path.read_text()) == {
            "node_id": first_id,
            "superlink": link.addresses["fleet"],
        }
    finally:
        node.stop()  # even on a failure: a running node would keep the test process alive
    again = run_node(link, node_id_file=path)
    try:
        assert again.node_id == first_id
        assert wait_for(lambda: link.state.online_node_ids() == [first_id], 10)
    finally:
        again.stop()


def test_two_nodes_sharing_a_file_get_different_ids(link: SuperLink, tmp_path: Path) -> None:
    path = tmp_path / "node-id.json"
    write_ready_file(path, {"node_id": 4242, "superlink": link.addresses["fleet"]})
    first = run_node(link, node_id_file=path)
    second = run_node(link, node_id_file=path)
    try:
        assert first.node_id == 4242
        assert second.node_id not in (0, 4242)
        assert json.loads(path.read_text())["node_id"] == 4242
    finally:
        second.stop()
        first.stop()


def test_the_ready_file_names_the_node_its_api_and_pid(link: SuperLink, tmp_path: Path) -> None:
    ready = tmp_path / "run" / "ready.json"
    node = run_node(link, ready_file=ready)
    try:
        assert wait_for(ready.exists, 10)
        assert json.loads(ready.read_text()) == {
            "node_id": node.node_id,
            "clientappio": node.clientappio_address,
            "pid": os.getpid(),
        }
        assert node.clientappio_address.startswith("127.0.0.1:")
    finally:
        node.stop()
