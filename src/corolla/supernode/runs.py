"""What the SuperNode keeps per active run: token, inputs, message queue, context, object cache.

The node relays encoded messages and contexts without decoding them; the protobufs held here
are opaque payloads. One lock guards the table; each run's condition (on that lock) wakes the
app process's long poll the moment a message is queued or the run ends.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corolla.common.errors import InvalidArgument, NotFound, Unauthenticated
from corolla.proto.v1 import message_pb2 as mpb
from corolla.proto.v1 import run_pb2 as rpb
from corolla.records.serde import referenced_object_ids

if TYPE_CHECKING:
    from corolla.supernode.launcher import AppProcess


@dataclass(eq=False)
class RunState:
    run_id: int
    token: str
    run: rpb.Run
    fab: rpb.Fab
    context: mpb.Context
    changed: threading.Condition
    objects: dict[str, memoryview] = field(default_factory=dict)
    queue: deque[mpb.Message] = field(default_factory=deque)
    inflight: dict[str, mpb.Message] = field(default_factory=dict)  # delivered, not answered
    active: bool = True
    process: AppProcess | None = None
    delivered: int = 0  # messages handed to the current process


class RunTable:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._by_id: dict[int, RunState] = {}
        self._by_token: dict[str, RunState] = {}

    def open(self, run: rpb.Run, fab: rpb.Fab, context: mpb.Context) -> RunState:
        with self.lock:
            state = RunState(
                run_id=run.run_id,
                token=secrets.token_urlsafe(32),
                run=run,
                fab=fab,
                context=context,
                changed=threading.Condition(self.lock),
            )
            self._by_id[run.run_id] = state
            self._by_token[state.token] = state
            return state

    def get(self, run_id: int) -> RunState | None:
        with self.lock:
            return self._by_id.get(run_id)

    def run_ids(self) -> list[int]:
        with self.lock:
            return list(self._by_id)

    def all(self) -> list[RunState]:
        with self.lock:
            return list(self._by_id.values())

    def by_token(self, token: str) -> RunState:
        with self.lock:
            state = self._by_token.get(token) if token else None
        if state is None:
            raise Unauthenticated("unknown or expired app token")
        return state

    def drop(self, state: RunState) -> None:
        """Forget a run (its token stops working, its objects are released)."""
        with self.lock:
            if self._by_id.get(state.run_id) is state:
                del self._by_id[state.run_id]
            self._by_token.pop(state.token, None)
            state.objects.clear()
            state.queue.clear()

    # -- messages -------------------------------------------------------------------------------

    def enqueue(
        self, state: RunState, message: mpb.Message, objects: dict[str, memoryview]
    ) -> list[str]:
        """Queue ``message`` with its objects; if some it needs are missing (released since they
        were checked), queue nothing and return their ids."""
        with self.lock:
            state.objects.update(objects)
            missing = self.missing_objects(state, referenced_object_ids([message]))
            if not missing:
                state.queue.append(message)
                state.changed.notify_all()
            return missing

    def deactivate(self, state: RunState) -> list[mpb.Message]:
        """Mark the run ended, wake its long polls; returns the messages never delivered."""
        with self.lock:
            state.active = False
            state.changed.notify_all()
            return self.take_queued(state)

    def take_queued(self, state: RunState) -> list[mpb.Message]:
        with self.lock:
            queued = list(state.queue)
            state.queue.clear()
            return queued

    def next_message(self, state: RunState, wait: float) -> mpb.Message | None:
        """The next queued message (now in flight), or None after ``wait`` or when inactive."""
        deadline = time.monotonic() + wait
        with self.lock:
            while state.active and not state.queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                state.changed.wait(remaining)
            if not state.active:
                return None
            message = state.queue.popleft()
            state.inflight[message.metadata.message_id] = message
            state.delivered += 1
            return message

    def complete(
        self, state: RunState, reply: mpb.Message, context: mpb.Context | None
    ) -> dict[str, memoryview]:
        """Accept a reply (and the updated context); returns the objects the reply needs."""
        with self.lock:
            original = state.inflight.get(reply.metadata.reply_to_message_id)
            if original is None:
                raise InvalidArgument(
                    "the reply does not answer a message delivered to this run's app process"
                )
            if reply.metadata.run_id != state.run_id:
                raise InvalidArgument(f"the reply belongs to run {reply.metadata.run_id}")
            if reply.metadata.src_node_id != original.metadata.dst_node_id:
                raise InvalidArgument("the reply's source is not this node")
            if context is not None and context.run_id != state.run_id:
                raise InvalidArgument(f"the context belongs to run {context.run_id}")
            needed = referenced_object_ids([reply] + ([context] if context else []))
            missing = [oid for oid in needed if oid not in state.objects]
            if missing:
                raise InvalidArgument(f"objects referenced but never pushed: {missing}")
            del state.inflight[reply.metadata.reply_to_message_id]
            if context is not None:
                state.context = context
            reply_objects = {oid: state.objects[oid] for oid in referenced_object_ids([reply])}
            self._prune(state)
            return reply_objects

    def take_inflight(self, state: RunState) -> list[mpb.Message]:
        with self.lock:
            messages = list(state.inflight.values())
            state.inflight.clear()
            return messages

    # -- objects --------------------------------------------------------------------------------

    def store_object(self, state: RunState, object_id: str, data: memoryview) -> None:
        with self.lock:
            state.objects[object_id] = data

    def missing_objects(self, state: RunState, object_ids: Iterable[str]) -> list[str]:
        with self.lock:
            return [oid for oid in object_ids if oid not in state.objects]

    def read_objects(self, state: RunState, object_ids: Iterable[str]) -> dict[str, memoryview]:
        object_ids = list(object_ids)
        with self.lock:
            found = {oid: state.objects[oid] for oid in object_ids if oid in state.objects}
        missing = [oid for oid in object_ids if oid not in found]
        if missing:
            raise NotFound(f"unknown objects: {', '.join(missing)}")
        return found

    def _prune(self, state: RunState) -> None:
        """Release objects no queued or in-flight message and not the context refers to."""
        keep = set(referenced_object_ids([*state.queue, *state.inflight.values(), state.context]))
        for oid in [oid for oid in state.objects if oid not in keep]:
            del state.objects[oid]
