"""What the SuperNode keeps per active run: token, inputs, message queue, context, objects.

The node relays encoded messages and contexts without decoding them: the records held here
(`domain.py`) carry them as opaque bytes. One lock, private to this module, guards the table
(other modules go through its methods); each run's condition (on that lock) wakes the app
process's long poll the moment a message is queued or the run ends. No child process is started
while it is held: `claim_start` reserves the start, the caller spawns, then records it with
`started`.

Isolation ``process`` (an *attachable* table): a run whose message waits with no app process
attached is handed to one `RequestRun` caller (`hand_out`) with a fresh token; `detach` voids
that token when the process goes silent, and the run waits for the next caller.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corolla.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    Unauthenticated,
    Unavailable,
)
from corolla.common.objectfiles import OpenObject
from corolla.supernode.domain import AppContext, Envelope, Fab, RunInfo
from corolla.supernode.objects import NodeObjects, RunObjects

if TYPE_CHECKING:
    from corolla.supernode.launcher import AppProcess


@dataclass
class Attachment:
    """An external app process serving a run (isolation ``process``); times are the clock's."""

    since: float
    last_seen: float


@dataclass(eq=False)
class RunState:
    run_id: int
    token: str
    run: RunInfo
    fab: Fab
    context: AppContext
    changed: threading.Condition
    objects: RunObjects
    recent: tuple[str, ...] = ()  # objects of the last message answered: the next may reuse them
    queue: deque[Envelope] = field(default_factory=deque)
    inflight: dict[str, Envelope] = field(default_factory=dict)  # delivered, not answered
    active: bool = True
    process: AppProcess | None = None  # isolation subprocess
    starting: bool = False  # a process is being spawned for the run (outside the lock)
    delivered: int = 0  # messages handed to the current process
    attached: Attachment | None = None  # isolation process
    queued_at: dict[str, float] = field(default_factory=dict)  # message id -> clock
    unattached_since: float = 0.0  # clock time the run last lost its app process
    warned: bool = False  # "waiting for an app process" was logged for this wait


class RunTable:
    def __init__(
        self,
        *,
        attachable: bool = False,
        clock: Callable[[], float] = time.monotonic,
        objects: NodeObjects | None = None,
    ) -> None:
        self._objects = objects or NodeObjects()  # a fresh temporary directory by default
        self._lock = threading.RLock()
        self.clock = clock
        self.attachable = attachable
        self._by_id: dict[int, RunState] = {}
        self._by_token: dict[str, RunState] = {}
        self._wanted = threading.Condition(self._lock)  # a run may need an app process
        self._closed = False

    def open(self, run: RunInfo, fab: Fab, context: AppContext) -> RunState:
        with self._lock:
            state = RunState(
                run_id=run.run_id,
                token=secrets.token_urlsafe(32),
                run=run,
                fab=fab,
                context=context,
                changed=threading.Condition(self._lock),
                objects=self._objects.for_run(run.run_id),
            )
            self._by_id[run.run_id] = state
            self._by_token[state.token] = state
            return state

    def get(self, run_id: int) -> RunState | None:
        with self._lock:
            return self._by_id.get(run_id)

    def run_ids(self) -> list[int]:
        with self._lock:
            return list(self._by_id)

    def active_run_ids(self) -> list[int]:
        """Runs not known to have ended (their end is what the node waits to hear of)."""
        with self._lock:
            return [run_id for run_id, state in self._by_id.items() if state.active]

    def all(self) -> list[RunState]:
        with self._lock:
            return list(self._by_id.values())

    def by_token(self, token: str) -> RunState:
        with self._lock:
            state = self._by_token.get(token) if token else None
            if state is None:
                raise Unauthenticated("unknown or expired app token")
            if state.attached is not None:  # any call with the token shows the process lives
                state.attached.last_seen = self.clock()
            return state

    def drop(self, state: RunState) -> None:
        """Forget a run (its token stops working, its objects are released)."""
        with self._lock:
            if self._by_id.get(state.run_id) is state:
                del self._by_id[state.run_id]
            self._by_token.pop(state.token, None)
            state.objects.clear()
            state.recent = ()
            state.queue.clear()
            state.queued_at.clear()

    def close(self) -> None:
        """The node stops: `hand_out` refuses from now on (waiters wake at once)."""
        with self._lock:
            self._closed = True
            self._wanted.notify_all()

    def inputs(self, state: RunState) -> tuple[RunInfo, Fab, AppContext]:
        """What an app process starts from: the run, its FAB and the current context."""
        with self._lock:
            return state.run, state.fab, state.context

    def serves(self, state: RunState, token: str | None) -> bool:
        """True while the run is active and ``token`` (if given) is still its token."""
        with self._lock:
            return state.active and token in (None, state.token)

    def release(self, state: RunState) -> None:
        """The run ended: mark it so and forget it unless an app process still holds it."""
        with self._lock:
            self.deactivate(state)
            if state.process is None and not state.starting and state.attached is None:
                self.drop(state)

    def sweep(self, visit: Callable[[RunState, float], None]) -> None:
        """Call ``visit(state, now)`` for every run, all under one hold of the table's lock
        (``visit`` only reads and changes the table; it must not block)."""
        with self._lock:
            now = self.clock()
            for state in list(self._by_id.values()):
                visit(state, now)

    # -- own app processes (isolation subprocess) -----------------------------------------------

    def claim_start(self, state: RunState, *, only_if_queued: bool = False) -> bool:
        """Reserve starting the run's app process; False if one runs, starts, or is not needed.
        The caller spawns it (lock not held) and then calls `started` or `start_failed`."""
        with self._lock:
            if not state.active or (only_if_queued and not state.queue) or state.starting:
                return False
            if state.process is not None and not state.process.stopping:
                return False
            state.starting = True
            state.delivered = 0
            return True

    def started(self, state: RunState, process: AppProcess) -> bool:
        """Record the spawned process; False if the run ended meanwhile (stop the process)."""
        with self._lock:
            state.starting = False
            state.process = process
            return state.active

    def start_failed(self, state: RunState) -> list[Envelope]:
        """The spawn failed: returns the queued messages (they get error replies)."""
        with self._lock:
            state.starting = False
            queued = self.take_queued(state)
            if not state.active and state.process is None:
                self.drop(state)
            return queued

    def process_exited(
        self, state: RunState, process: AppProcess
    ) -> tuple[list[Envelope], list[Envelope], bool] | None:
        """``process`` was reaped: ``(in flight, queued to fail, run active)``, or None if it
        was not the run's current process. A finished run is forgotten; a process that died
        before taking any work fails the queued messages instead of being restarted."""
        with self._lock:
            if state.process is not process:
                return None
            state.process = None
            inflight = self.take_inflight(state)
            failed: list[Envelope] = []
            if not state.active:
                self.drop(state)
            elif state.delivered == 0:
                failed = self.take_queued(state)
            return inflight, failed, state.active

    # -- external app processes (isolation process) ---------------------------------------------

    @staticmethod
    def needs_app(state: RunState) -> bool:
        return state.active and state.attached is None and bool(state.queue)

    def hand_out(self, wait: float) -> tuple[int, str] | None:
        """Wait up to ``wait`` s for a run that needs an app process and attach the caller to
        it; returns ``(run_id, token)`` with a fresh token, or None."""
        if not self.attachable:
            raise FailedPrecondition(
                "this SuperNode runs in isolation subprocess: it starts its own app processes"
            )
        deadline = time.monotonic() + wait
        with self._lock:
            while True:
                if self._closed:  # callers back off instead of asking again at once
                    raise Unavailable("the SuperNode is stopping")
                waiting = [s for s in self._by_id.values() if self.needs_app(s)]
                if waiting:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._wanted.wait(remaining)
            state = min(waiting, key=lambda s: min(s.queued_at.values(), default=0.0))
            self._by_token.pop(state.token, None)
            state.token = secrets.token_urlsafe(32)
            self._by_token[state.token] = state
            now = self.clock()
            state.attached = Attachment(since=now, last_seen=now)
            state.warned = False
            return state.run_id, state.token

    def detach(self, state: RunState) -> list[Envelope]:
        """The run's app process is gone: void its token; returns the messages it held."""
        with self._lock:
            self._by_token.pop(state.token, None)
            state.token = ""
            state.attached = None
            state.unattached_since = self.clock()
            state.changed.notify_all()  # a long poll of the lost process ends now
            self._wanted.notify_all()
            return self.take_inflight(state)

    # -- messages -------------------------------------------------------------------------------

    def enqueue(self, state: RunState, message: Envelope) -> list[str]:
        """Queue ``message``, its objects in ``state.objects``; if some it needs are missing
        (released since they were fetched), queue nothing and return their ids."""
        with self._lock:
            missing = state.objects.missing(message.object_ids)
            if not missing:
                state.queue.append(message)
                state.queued_at[message.message_id] = self.clock()
                state.changed.notify_all()
                self._wanted.notify_all()
            return missing

    def deactivate(self, state: RunState) -> list[Envelope]:
        """Mark the run ended, wake its long polls; returns the messages never delivered."""
        with self._lock:
            state.active = False
            state.changed.notify_all()
            return self.take_queued(state)

    def take_queued(self, state: RunState) -> list[Envelope]:
        with self._lock:
            queued = list(state.queue)
            state.queue.clear()
            state.queued_at.clear()
            return queued

    def next_message(
        self, state: RunState, wait: float, token: str | None = None
    ) -> Envelope | None:
        """The next queued message (now in flight), or None after ``wait``, when inactive, or
        when ``token`` is no longer the run's (its app process was detached)."""
        deadline = time.monotonic() + wait
        with self._lock:
            while state.active and not state.queue and token in (None, state.token):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                state.changed.wait(remaining)
            if not state.active or token not in (None, state.token):
                return None
            message = state.queue.popleft()
            state.queued_at.pop(message.message_id, None)
            state.inflight[message.message_id] = message
            state.delivered += 1
            return message

    def complete(
        self, state: RunState, reply: Envelope, context: AppContext | None
    ) -> dict[str, OpenObject]:
        """Accept a reply (and the updated context); returns the objects the reply needs,
        opened (the caller closes them once they are sent)."""
        with self._lock:
            original = state.inflight.get(reply.reply_to_message_id)
            if original is None:
                raise InvalidArgument(
                    "the reply does not answer a message delivered to this run's app process"
                )
            if reply.run_id != state.run_id:
                raise InvalidArgument(f"the reply belongs to run {reply.run_id}")
            if reply.src_node_id != original.dst_node_id:
                raise InvalidArgument("the reply's source is not this node")
            if context is not None and context.run_id != state.run_id:
                raise InvalidArgument(f"the context belongs to run {context.run_id}")
            needed = dict.fromkeys(reply.object_ids + (context.object_ids if context else ()))
            missing = state.objects.missing(needed)
            if missing:
                raise InvalidArgument(f"objects referenced but never pushed: {missing}")
            reply_objects = {oid: state.objects.open(oid) for oid in reply.object_ids}
            del state.inflight[reply.reply_to_message_id]
            if context is not None:
                state.context = context
            state.recent = original.object_ids
            self._prune(state)
            return reply_objects

    def take_waiting(self, state: RunState, message_ids: Iterable[str]) -> list[Envelope]:
        """Take the given queued messages out of the queue (they will not be delivered)."""
        wanted = set(message_ids)
        with self._lock:
            taken = [m for m in state.queue if m.message_id in wanted]
            state.queue = deque(m for m in state.queue if m.message_id not in wanted)
            for message_id in wanted:
                state.queued_at.pop(message_id, None)
            self._prune(state)
            return taken

    def take_inflight(self, state: RunState) -> list[Envelope]:
        with self._lock:
            messages = list(state.inflight.values())
            state.inflight.clear()
            return messages

    # -- objects --------------------------------------------------------------------------------

    def missing_objects(self, state: RunState, object_ids: Iterable[str]) -> list[str]:
        return state.objects.missing(object_ids)

    def make_room(self, state: RunState, message: Envelope) -> None:
        """A new message came: the objects kept from the message answered last that it does
        not carry go now (keeping them was a guess that the next message reuses them), so a
        large model's files are not held twice while the next model arrives."""
        wanted = set(message.object_ids)
        with self._lock:
            if not wanted.issuperset(state.recent):
                state.recent = tuple(oid for oid in state.recent if oid in wanted)
                self._prune(state)

    def _prune(self, state: RunState) -> None:
        """Release objects no queued or in-flight message, nor the context, nor the message
        answered last refers to. (The last one's stay because the next message often carries
        them again: a strategy evaluates the model it then trains next.)"""
        keep = {*state.context.object_ids, *state.recent}
        for message in (*state.queue, *state.inflight.values()):
            keep.update(message.object_ids)
        state.objects.release(oid for oid in state.objects.ids() if oid not in keep)
