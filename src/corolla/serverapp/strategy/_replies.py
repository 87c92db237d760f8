"""Screening a round's replies as they arrive: good ones go on, failures are logged and counted."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from corolla.records import Message

log = logging.getLogger(__name__)

Check = Callable[[Message], str | None]  # the reason a reply is unusable, or None if it is fine


@dataclass
class Tally:
    """Outcome of one phase (``train`` or ``evaluate``) of a round."""

    phase: str
    server_round: int
    pending: dict[str, int]  # message id -> node id, for messages not answered yet
    sent: int = 0
    ok: int = 0
    failures: dict[int, str] = field(default_factory=dict)  # node id -> reason

    def fail(self, node_id: int, reason: str) -> None:
        self.failures[node_id] = reason
        log.warning(
            "[ROUND %d] %s failed on node %d: %s", self.server_round, self.phase, node_id, reason
        )

    def finish(self) -> None:
        """Count every message still unanswered as a failure."""
        for node_id in self.pending.values():
            self.fail(node_id, "no reply before the round's timeout")
        self.pending.clear()


def screen(replies: Iterable[Message], tally: Tally, check: Check) -> Iterator[Message]:
    """Yield the replies that carry content and pass ``check``; log and count the others."""
    for reply in replies:
        node_id = tally.pending.pop(reply.metadata.reply_to_message_id, None)
        if node_id is None:
            continue  # not one of ours, or a duplicate
        if reply.has_error():
            error = reply.error
            reason: str | None = f"ClientApp replied with error {error.code}: {error.reason}"
        else:
            reason = check(reply)
        if reason is None:
            tally.ok += 1
            yield reply
        else:
            tally.fail(node_id, reason)
    tally.finish()


def start_tally(phase: str, server_round: int, messages: list[Message], ids: list[str]) -> Tally:
    pending = {mid: msg.metadata.dst_node_id for mid, msg in zip(ids, messages, strict=True)}
    return Tally(phase=phase, server_round=server_round, pending=pending, sent=len(messages))
