"""Screening a round's replies as they arrive: good ones go on, failures are logged and counted.

A failure seen for the first time in the run is logged in full; identical ones later (other
nodes, later rounds) add up to one line per phase of a round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from corolla.records import Message
from corolla.serverapp.strategy._errors import REFUSED, ErrorDigest, Failure, describe_nodes

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
    failed: list[Failure] = field(default_factory=list)  # in order of arrival
    digest: ErrorDigest = field(default_factory=ErrorDigest)
    _repeats: dict[str, list[Failure]] = field(default_factory=dict)

    def fail(self, node_id: int, reason: str, code: int = REFUSED) -> None:
        failure = Failure(node_id, self.server_round, self.phase, reason, code)
        self.failures[node_id] = reason
        self.failed.append(failure)
        if self.digest.note(failure):
            log.warning(
                "[ROUND %d] %s failed on node %d: %s",
                self.server_round,
                self.phase,
                node_id,
                reason,
            )
        else:
            self._repeats.setdefault(failure.signature, []).append(failure)

    def finish(self) -> None:
        """Count every message still unanswered as a failure; log the repeated failures."""
        for node_id in self.pending.values():
            self.fail(node_id, "no reply before the round's timeout")
        self.pending.clear()
        for repeats in self._repeats.values():
            log.warning(
                "[ROUND %d] %s failed with the same error as before on %s: %s",
                self.server_round,
                self.phase,
                describe_nodes(sorted({f.node_id for f in repeats})),
                repeats[0].headline,
            )
        self._repeats.clear()


def screen(replies: Iterable[Message], tally: Tally, check: Check) -> Iterator[Message]:
    """Yield the replies that carry content and pass ``check``; log and count the others."""
    for reply in replies:
        node_id = tally.pending.pop(reply.metadata.reply_to_message_id, None)
        if node_id is None:
            continue  # not one of ours, or a duplicate
        if reply.has_error():
            error = reply.error
            tally.fail(
                node_id, f"ClientApp replied with error {error.code}: {error.reason}", error.code
            )
            continue
        reason = check(reply)
        if reason is None:
            tally.ok += 1
            yield reply
        else:
            tally.fail(node_id, reason)
    tally.finish()


def start_tally(
    phase: str, server_round: int, messages: list[Message], ids: list[str], digest: ErrorDigest
) -> Tally:
    pending = {mid: msg.metadata.dst_node_id for mid, msg in zip(ids, messages, strict=True)}
    return Tally(
        phase=phase, server_round=server_round, pending=pending, sent=len(messages), digest=digest
    )
