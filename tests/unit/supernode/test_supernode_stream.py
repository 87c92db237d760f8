"""What a SuperNode's open stream sends up: acknowledgements held back for a reply to carry."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import pytest

from corolla.common.errors import DeadlineExceeded
from corolla.common.protocol import MAX_ACKS
from corolla.proto.v1 import fleet_pb2 as fpb
from corolla.proto.v1 import message_pb2 as mpb
from corolla.supernode.connection import FleetConnection, NodeStream
from corolla.supernode.domain import Envelope

pytestmark = pytest.mark.timeout(30)

WAIT = 10.0  # seconds a test waits for the stream to send something


def reply_to(instruction_id: str) -> Envelope:
    metadata = mpb.Metadata(
        message_id=f"reply-{instruction_id}", reply_to_message_id=instruction_id
    )
    return Envelope(
        message_id=f"reply-{instruction_id}",
        run_id=1,
        src_node_id=7,
        dst_node_id=0,
        reply_to_message_id=instruction_id,
        group_id="1",
        message_type="query",
        created_at=0.0,
        ttl=60.0,
        payload=mpb.Message(metadata=metadata).SerializeToString(),
    )


def stream(ack_delay: float) -> tuple[NodeStream, Iterator[fpb.NodeUp]]:
    # No call: nothing but the requests' generator is used here.
    node_stream = NodeStream(cast(FleetConnection, None), 7, ack_delay)
    return node_stream, node_stream.requests()


def sent(requests: Iterator[fpb.NodeUp], pool: ThreadPoolExecutor) -> fpb.NodeUp:
    """The next message the stream sends (failing after WAIT seconds without one)."""
    return pool.submit(next, requests).result(timeout=WAIT)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as executor:
        yield executor


def test_without_a_delay_an_acknowledgement_goes_up_at_once(pool: ThreadPoolExecutor) -> None:
    node_stream, requests = stream(ack_delay=0)
    node_stream.ack(["a", "b"])
    assert list(sent(requests, pool).ack_message_ids) == ["a", "b"]


def test_an_acknowledgement_no_reply_carried_goes_up_on_its_own(pool: ThreadPoolExecutor) -> None:
    node_stream, requests = stream(ack_delay=0.01)
    node_stream.ack(["a", "b"])
    up = sent(requests, pool)
    assert list(up.ack_message_ids) == ["a", "b"] and not up.replies


def test_a_reply_carries_the_acknowledgements_held_back_but_its_own(
    pool: ThreadPoolExecutor,
) -> None:
    node_stream, requests = stream(ack_delay=3600)  # never due: only a reply sends them
    node_stream.ack(["a", "b", "c"])
    with pytest.raises(DeadlineExceeded):  # nobody answers the push here
        node_stream.push([reply_to("b")], timeout=0.01)
    up = sent(requests, pool)
    assert [r.metadata.reply_to_message_id for r in up.replies] == ["b"]
    assert list(up.ack_message_ids) == ["a", "c"]  # "b" is acknowledged by its reply


def test_acknowledgements_past_the_limit_of_one_message_follow_the_reply(
    pool: ThreadPoolExecutor,
) -> None:
    node_stream, requests = stream(ack_delay=3600)
    ids = [f"m{n}" for n in range(MAX_ACKS + 6)]
    node_stream.ack(ids)
    with pytest.raises(DeadlineExceeded):
        node_stream.push([reply_to("m0")], timeout=0.01)
    first, second = sent(requests, pool), sent(requests, pool)
    assert len(first.replies) == 1 and list(first.ack_message_ids) == ids[1 : MAX_ACKS + 1]
    assert not second.replies and list(second.ack_message_ids) == ids[MAX_ACKS + 1 :]


def test_a_heartbeat_does_not_wait_for_acknowledgements_held_back(
    pool: ThreadPoolExecutor,
) -> None:
    node_stream, requests = stream(ack_delay=3600)
    node_stream.ack(["a"])
    node_stream.send_beat(30.0, [1])
    up = sent(requests, pool)
    assert up.beat == 1 and not up.ack_message_ids
