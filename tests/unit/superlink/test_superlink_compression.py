"""--compression on a real SuperLink (ServerAppIo on a free loopback port): what it sends to a
puller is compressed only when it is set to and the puller accepts zstd; what it is pushed it
decodes and checks whatever its own setting."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import grpc
import pytest
from object_wire import WireRecorder, encodings, pull_frames
from run_helpers import running_run

from corolla.common.compression import NONE, ZSTD
from corolla.common.grpc import create_channel
from corolla.common.objects import object_id_of
from corolla.common.transfer import TOKEN_KEY, ObjectClient
from corolla.proto.v1 import objects_pb2 as opb
from corolla.superlink.config import SuperLinkConfig
from corolla.superlink.link import SuperLink

pytestmark = pytest.mark.timeout(60)
SERVICE = "corolla.proto.v1.ServerAppIo"
MiB = 1 << 20
MODEL = bytes(2 * MiB) + b"\x07" * 5000  # a sparse model: compresses to a few KiB
MODEL_ID = object_id_of(MODEL)

Start = Callable[[str], tuple[SuperLink, str]]


@pytest.fixture
def start() -> Iterator[Start]:
    """``start(compression)``: a SuperLink with that setting and a running run holding
    `MODEL`; returns it and the run's token."""
    links: list[SuperLink] = []

    def started(compression: str) -> tuple[SuperLink, str]:
        link = SuperLink(
            SuperLinkConfig(
                serverappio_address="127.0.0.1:0",
                fleet_address="127.0.0.1:0",
                exec_address="127.0.0.1:0",
                app_heartbeat_timeout=3600,
                spare_app_process=False,
                compression=compression,
            )
        )
        link.start()
        links.append(link)
        run_id, token = running_run(link.state)
        link.state.store_object(run_id, MODEL_ID, MODEL)
        return link, token

    yield started
    for link in links:
        link.stop()


@pytest.mark.parametrize(
    ("setting", "accept", "expected"),
    [
        pytest.param(ZSTD, [ZSTD], {1}, id="both-on"),
        pytest.param(ZSTD, [], {0}, id="puller-does-not-accept"),
        pytest.param(NONE, [ZSTD], {0}, id="superlink-off"),
    ],
)
def test_serverappio_pulls_are_compressed_only_when_both_sides_say_so(
    start: Start, setting: str, accept: list[str], expected: set[int]
) -> None:
    link, token = start(setting)
    request = opb.PullObjectsRequest(object_ids=[MODEL_ID], accept_encodings=accept)
    with create_channel(link.addresses["serverappio"], insecure=True) as channel:
        frames = pull_frames(channel, SERVICE, request, [(TOKEN_KEY, token)])
        assert encodings(frames) == expected
        wire = sum(map(len, frames))
        assert wire < len(MODEL) // 50 if expected == {1} else wire > len(MODEL)
        client = ObjectClient(channel, SERVICE, [(TOKEN_KEY, token)])
        assert bytes(client.pull([MODEL_ID], ids={}, timeout=10)[MODEL_ID]) == MODEL


@pytest.mark.parametrize("setting", [NONE, ZSTD])
def test_a_compressed_push_is_accepted_and_checked_whatever_the_superlinks_setting(
    start: Start, setting: str
) -> None:
    link, token = start(setting)
    update = b"\x01" * MiB + bytes(MiB)
    recorder = WireRecorder()
    raw = create_channel(link.addresses["serverappio"], insecure=True)
    with raw:
        channel = grpc.intercept_channel(raw, recorder)
        client = ObjectClient(channel, SERVICE, [(TOKEN_KEY, token)], compression=ZSTD)
        assert client.push({object_id_of(update): update}, ids={}, timeout=10) == 1
        assert encodings(recorder.pushed) == {1}
        stored = b"".join(link.state.read_object(object_id_of(update), MiB))
        assert stored == update

        tampered = bytes(2 * MiB)  # compressed under the id of other content: refused
        with pytest.raises(grpc.RpcError) as refused:
            client.push({object_id_of(update + b"x"): tampered}, ids={}, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "does not match its id" in (refused.value.details() or "")
        assert link.state.missing_objects([object_id_of(update + b"x")])


@pytest.mark.parametrize(("setting", "lines"), [(ZSTD, 1), (NONE, 0)])
def test_the_superlink_says_once_at_start_that_it_compresses(
    start: Start, setting: str, lines: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="corolla.superlink"):
        start(setting)
    said = [r.getMessage() for r in caplog.records if "compression zstd" in r.getMessage()]
    assert len(said) == lines
