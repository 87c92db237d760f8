"""--compression between a SuperNode and a real SuperLink: each side compresses what it sends
only when its own setting says so (both always accept zstd), and payloads arrive whole."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from object_wire import WireRecorder, encodings
from real_superlink import Link

from corolla.common.compression import NONE, ZSTD
from corolla.common.objects import BufferSink, object_id_of
from corolla.supernode import connection
from corolla.supernode.connection import FleetConnection
from corolla.supernode.node import SuperNode

pytestmark = pytest.mark.timeout(60)
MiB = 1 << 20
SPARSE = np.zeros(300_000, dtype=np.float32)  # 1.2 MB: two chunks, compresses to almost nothing


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> WireRecorder:
    """Every object frame on the Fleet channels the SuperNode side opens from now on."""
    seen = WireRecorder()
    real = connection.create_channel

    def recorded(*args: object, **kwargs: object) -> grpc.Channel:
        return grpc.intercept_channel(real(*args, **kwargs), seen)  # type: ignore[arg-type]

    monkeypatch.setattr(connection, "create_channel", recorded)
    return seen


@pytest.fixture
def links() -> Iterator[Callable[[str], Link]]:
    started: list[Link] = []

    def start(compression: str) -> Link:
        started.append(Link(compression=compression))
        return started[-1]

    yield start
    for link in started:
        link.stop()


@pytest.mark.parametrize(
    ("link_setting", "node_setting", "pulled", "pushed"),
    [
        pytest.param(ZSTD, ZSTD, {1}, {1}, id="both-on"),
        pytest.param(ZSTD, NONE, {1}, {0}, id="superlink-only"),
        pytest.param(NONE, ZSTD, {0}, {1}, id="supernode-only"),
        pytest.param(NONE, NONE, {0}, {0}, id="both-off"),
    ],
)
def test_each_side_compresses_what_it_sends_when_set_to(
    links: Callable[[str], Link],
    recorder: WireRecorder,
    app_fab: tuple[bytes, str],
    link_setting: str,
    node_setting: str,
    pulled: set[int],
    pushed: set[int],
) -> None:
    link = links(link_setting)
    conn = FleetConnection(link.address, insecure=True, compression=node_setting)
    try:
        node_id, _ = conn.create_node(5.0)
        run_id = link.add_run(app_fab)
        link.send(run_id, node_id, arrays=[SPARSE])
        (instruction,), _ = conn.pull_messages(node_id, 1.0, 10, [])
        (object_id,) = instruction.object_ids
        sinks: dict[str, BufferSink] = {}

        def open_sink(oid: str, size: int) -> BufferSink:
            return sinks.setdefault(oid, BufferSink())

        conn.pull_objects(node_id, run_id, [object_id], open_sink)
        assert bytes(sinks[object_id].commit()) == SPARSE.tobytes()
        assert encodings(recorder.pulled) == pulled

        update = b"\x05" * MiB + bytes(MiB)
        assert conn.push_objects(node_id, run_id, {object_id_of(update): update}) == 1
        assert encodings(recorder.pushed) == pushed
        assert b"".join(link.state.read_object(object_id_of(update), MiB)) == update
    finally:
        conn.close()


@pytest.fixture
def link() -> Iterator[Link]:
    """The SuperNode fixtures' SuperLink, set to compress."""
    started = Link(compression=ZSTD)
    yield started
    started.stop()


def test_a_supernode_set_to_zstd_compresses_its_replies_through_its_clientapp(
    link: Link,
    recorder: WireRecorder,
    start_node: Callable[..., SuperNode],
    app_fab: tuple[bytes, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_id = link.add_run(app_fab)
    with caplog.at_level(logging.INFO, logger="corolla.supernode"):
        start_node(compression=ZSTD, spare_app_process=False)
    said = [r for r in caplog.records if "compression zstd" in r.getMessage()]
    assert len(said) == 1
    node_id = link.wait_node()
    reply = link.reply_to(link.send(run_id, node_id, arrays=[SPARSE + 1]))
    assert not reply.has_error(), reply
    (doubled,) = reply.content["arrays"].to_numpy_ndarrays()
    np.testing.assert_array_equal(doubled, (SPARSE + 1) * 2)
    assert encodings(recorder.pulled) == {1}  # the model, from the SuperLink
    assert encodings(recorder.pushed) == {1}  # the reply's arrays, to it
