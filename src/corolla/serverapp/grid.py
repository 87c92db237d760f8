"""`Grid`: how a ServerApp reaches the SuperNodes of its run."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator

from corolla.records import Message, RecordDict

_POLL_START = 0.001
_POLL_MAX = 0.05


class Grid(ABC):
    """Send messages to nodes and receive their replies.

    Implementations: the deployment runtime (over the ServerAppIo API), the simulation, and
    `corolla.simulation.InProcessGrid` for tests. ``push_messages`` stamps ``run_id`` and
    ``src_node_id``; ``pull_messages`` returns (and consumes) the replies available now.
    """

    @property
    @abstractmethod
    def run_id(self) -> int: ...

    @abstractmethod
    def get_node_ids(self) -> list[int]:
        """IDs of the nodes currently online in this federation."""

    @abstractmethod
    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Queue messages for delivery; returns their message ids in order."""

    @abstractmethod
    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        """Replies to the given message ids that have arrived; each is returned only once."""

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """A new message of this run (same as the `Message` constructor, kept for familiarity)."""
        message = Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)
        message.metadata.run_id = self.run_id
        return message

    def receive(
        self, message_ids: Iterable[str], timeout: float | None = None
    ) -> Iterator[Message]:
        """Yield replies as they arrive until all came or ``timeout`` seconds passed.

        This default polls with a short backoff; runtimes override it to block on the server.
        """
        pending = set(message_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = _POLL_START
        while pending:
            replies = self.pull_messages(list(pending))
            for reply in replies:
                pending.discard(reply.metadata.reply_to_message_id)
                yield reply
            if not pending:
                return
            if replies:
                delay = _POLL_START
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return
            pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            delay = min(delay * 2, _POLL_MAX)

    def save_checkpoint(self, server_round: int, checkpoint: RecordDict) -> None:
        """Keep ``checkpoint`` (the state after round ``server_round``) durably with the run,
        replacing the previous one, so that a restarted ServerApp of this run can resume.

        This default keeps nothing; the deployment runtime stores it in the SuperLink.
        """
        return None

    def load_checkpoint(self) -> tuple[int, RecordDict] | None:
        """The run's last checkpoint as ``(server_round, checkpoint)``, or None if it has none
        (a fresh run, or a runtime that keeps no checkpoints)."""
        return None

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        """Push messages and wait up to ``timeout`` seconds for their replies (those that came)."""
        return list(self.receive(self.push_messages(messages), timeout))
