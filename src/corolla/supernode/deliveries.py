"""What the SuperNode received from the SuperLink: the acknowledgements its next pull carries,
and the instructions it has taken in already.

The SuperLink delivers an instruction with every pull until the node acknowledges or answers
it, so a pull whose answer was lost on the way (a cut connection, a deadline that passed while
the answer was in flight) loses nothing. The node acknowledges what a pull brought with its next
pull, and takes each instruction in once however often it comes.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from corolla.supernode.domain import Envelope

log = logging.getLogger(__name__)

REMEMBERED = 4096  # instruction ids kept to recognise one that comes again


class Deliveries:
    """Used by the pull loop alone (one thread)."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._remembered = remembered
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._acks: list[str] = []

    def acks(self) -> list[str]:
        """The instructions the last successful pull brought: the next pull acknowledges them
        (again, after a pull that failed: the SuperLink may not have seen them)."""
        return list(self._acks)

    def received(self, messages: list[Envelope]) -> list[Envelope]:
        """The messages of a successful pull, less those taken in already."""
        self._acks = [message.message_id for message in messages]
        fresh = []
        for message in messages:
            if message.message_id in self._seen:
                log.info(
                    "run %d: message %s came again (an earlier pull's answer was lost): "
                    "taken in once",
                    message.run_id,
                    message.message_id,
                )
                continue
            fresh.append(message)
            self._seen[message.message_id] = None
            if len(self._seen) > self._remembered:
                self._seen.popitem(last=False)
        return fresh
