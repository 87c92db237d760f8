"""`Deliveries`: what a pull brought is acknowledged by the next, and taken in once."""

from __future__ import annotations

from corolla.supernode.deliveries import Deliveries
from corolla.supernode.domain import Envelope


def envelope(message_id: str) -> Envelope:
    return Envelope(
        message_id=message_id,
        run_id=1,
        src_node_id=0,
        dst_node_id=7,
        reply_to_message_id="",
        group_id="",
        message_type="train",
        created_at=0.0,
        ttl=60.0,
        payload=b"",
    )


def test_a_pull_acknowledges_what_the_last_successful_pull_brought() -> None:
    deliveries = Deliveries()
    assert deliveries.acks() == []
    deliveries.received([envelope("a"), envelope("b")])
    assert deliveries.acks() == ["a", "b"]
    assert deliveries.acks() == ["a", "b"]  # a pull that failed: the next one sends them again
    deliveries.received([])
    assert deliveries.acks() == []


def test_a_message_that_comes_again_is_taken_in_once_and_acknowledged_again() -> None:
    deliveries = Deliveries()
    assert [m.message_id for m in deliveries.received([envelope("a")])] == ["a"]
    fresh = deliveries.received([envelope("a"), envelope("b")])  # "a": its ack was lost
    assert [m.message_id for m in fresh] == ["b"]
    assert deliveries.acks() == ["a", "b"]


def test_only_the_latest_ids_are_remembered() -> None:
    deliveries = Deliveries(remembered=2)
    for message_id in "abc":
        deliveries.received([envelope(message_id)])
    assert [m.message_id for m in deliveries.received([envelope("b"), envelope("a")])] == ["a"]
