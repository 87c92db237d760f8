"""`Grid`: how a ServerApp reaches the SuperNodes of its run."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator

from corolla.common.errors import InvalidArgument
from corolla.records import Message, RecordDict
from corolla.records.metadata import validate_message_type
from corolla.serverapp._run import NodeInfo, Run

_POLL_START = 0.001
_POLL_MAX = 0.05

# The clock and the pause of the default `Grid.receive`, looked up at each call (tests swap them).
_monotonic = time.monotonic
_sleep = time.sleep


class Grid(ABC):
    """Send messages to nodes and receive their replies.

    Implementations: the deployment runtime (over the ServerAppIo API), the simulation, and
    `corolla.simulation.InProcessGrid` for tests. The abstract methods are Flower's, so a Grid
    written for Flower subclasses this one unchanged; `create_message` and `send_and_receive`
    carry a default a subclass may call with ``super()``. ``push_messages`` stamps ``run_id``
    and ``src_node_id`` and refuses what cannot be pushed (see `check_outgoing`);
    ``pull_messages`` returns (and consumes) the replies available now.
    """

    @abstractmethod
    def set_run(self, run: Run) -> None:
        """Describe the run this grid serves (the runtime calls it with what it knows)."""

    @property
    @abstractmethod
    def run(self) -> Run:
        """The run this grid serves (a copy: changing it changes nothing)."""

    @property
    def run_id(self) -> int:
        """The id of `run`; grids that know it without building a `Run` override this."""
        return self.run.run_id

    @abstractmethod
    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """A new message of this run: the `Message` constructor, with ``run_id`` stamped.
        ``ttl=None`` gives `DEFAULT_TTL` (12 hours) to deliver the message and get its reply."""
        message = Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)
        message.metadata.run_id = self.run_id
        return message

    @abstractmethod
    def get_node_ids(self) -> list[int]:
        """IDs of the nodes currently online in this federation."""

    def get_nodes(self) -> list[NodeInfo]:
        """The nodes currently online in this federation (what `get_node_ids` lists)."""
        return [NodeInfo(node_id=node_id) for node_id in self.get_node_ids()]

    @abstractmethod
    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Queue messages for delivery; returns their message ids in order."""

    @abstractmethod
    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        """Replies to the given message ids that have arrived; each is returned only once."""

    @abstractmethod
    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        """Push messages and wait for their replies: all of them (``timeout=None``) or those
        that came within ``timeout`` seconds. The wait does not change a message's TTL."""
        return list(self.receive(self.push_messages(messages), timeout))

    def receive(
        self, message_ids: Iterable[str], timeout: float | None = None
    ) -> Iterator[Message]:
        """Yield replies as they arrive until all came or ``timeout`` seconds passed.

        This default polls with a short backoff; runtimes override it to block on the server.
        """
        pending = set(message_ids)
        deadline = None if timeout is None else _monotonic() + timeout
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
            now = _monotonic()
            if deadline is not None and now >= deadline:
                return
            _sleep(delay if deadline is None else min(delay, deadline - now))
            delay = min(delay * 2, _POLL_MAX)

    def save_checkpoint(self, server_round: int, checkpoint: RecordDict) -> None:
        """Keep ``checkpoint`` (the state after round ``server_round``) durably with the run,
        replacing the previous one, so that a restarted ServerApp of this run can resume.

        This default keeps nothing; the deployment runtime stores it in the SuperLink.
        """
        return None

    def load_checkpoint(self) -> tuple[int, RecordDict] | None:
        """The checkpoint to resume from, as ``(server_round, checkpoint)``: the run's last
        one, saved by an earlier ServerApp process of the run. None for a fresh run, for a
        runtime that keeps no checkpoints, and once this grid has saved a checkpoint itself
        (a second ``strategy.start`` in the same ServerApp starts afresh, as in Flower)."""
        return None


class RunBoundGrid(Grid):
    """The part Corolla's own grids share: each serves the one run it was made for.

    A subclass sets ``_run_id`` and ``_run`` (the description of the run, or None to have
    `describe_run` fetch it on first use) in its constructor.
    """

    _run_id: int
    _run: Run | None

    @property
    def run_id(self) -> int:
        return self._run_id

    @property
    def run(self) -> Run:
        if self._run is None:
            self._run = same_run(self._run_id, self.describe_run())
        return self._run.copy()

    def describe_run(self) -> Run:
        """The run's description when none was given (this default: an empty one)."""
        return Run.create_empty(self._run_id)

    def set_run(self, run: Run) -> None:
        """Take a fuller description of the same run; another run is `InvalidArgument`."""
        self._run = same_run(self._run_id, run)

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return super().create_message(content, message_type, dst_node_id, group_id, ttl)


def check_outgoing(messages: Iterable[Message]) -> list[Message]:
    """``messages`` as a list, each one a message a ServerApp may push: a new message (not a
    reply, no error) with an id, a valid message type, an integer node id to go to and a
    positive TTL (each grid checks that the node is one of its own). Otherwise
    `InvalidArgument` (a `ValueError`, what Flower raises) for the first that is not, and none
    of the batch should be pushed."""
    batch = list(messages)
    for message in batch:
        if not isinstance(message, Message):
            raise TypeError(f"push_messages takes Messages, got {type(message).__name__}")
        md = message.metadata
        if md.reply_to_message_id or message.has_error():
            raise InvalidArgument(
                f"invalid message {md.message_id}: a reply cannot be pushed, build a new "
                "Message(content, dst_node_id, message_type)"
            )
        if not md.message_id:
            raise InvalidArgument("invalid message: it has no message_id")
        validate_message_type(md.message_type)
        if type(md.dst_node_id) is not int:
            raise InvalidArgument(
                f"invalid message {md.message_id}: dst_node_id {md.dst_node_id!r} is no node id"
            )
        if not md.ttl > 0:
            raise InvalidArgument(f"invalid message {md.message_id}: ttl must be positive")
    return batch


def same_run(run_id: int, run: Run) -> Run:
    """``run`` (copied) if it describes run ``run_id``: a grid serves the run it was made for
    (its token, its nodes' contexts); a description of another run is `InvalidArgument`."""
    if not isinstance(run, Run):
        raise TypeError(f"set_run takes a Run, got {type(run).__name__}")
    if run.run_id != run_id:
        raise InvalidArgument(f"this grid serves run {run_id}, not run {run.run_id}")
    return run.copy()
