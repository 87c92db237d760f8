"""Replies and log lines on their way to the SuperLink, in order, retried while it is away.

A reply is retried (with backoff) until it is delivered or its TTL runs out; log batches get a
few attempts. Errors that retrying cannot fix (the SuperLink refused the item) drop the item
with a log line. Nothing here raises into the caller.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from corolla.common.backoff import retry
from corolla.common.errors import (
    CorollaError,
    DeadlineExceeded,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from corolla.common.objectfiles import OpenObject
from corolla.common.transfer import TransferLog
from corolla.supernode.connection import FleetConnection, NodeStream, Stopped, StreamEnded
from corolla.supernode.domain import Envelope
from corolla.supernode.replies import error_reply

log = logging.getLogger(__name__)

LOG_ATTEMPTS = 3
REFUSED_ATTEMPTS = 5  # NOT_FOUND (e.g. the node is re-registering) or RESOURCE_EXHAUSTED
MAX_PENDING_LOG_BATCHES = 1000
_AWAY = (Unavailable, DeadlineExceeded)  # retried until the reply's TTL runs out
_REFUSED = (NotFound, ResourceExhausted)  # retried a few times


class _Again(CorollaError):
    """Sending the item failed in a way worth another attempt."""


@dataclass
class _Reply:
    run_id: int
    message: Envelope
    objects: dict[str, OpenObject]  # closed once the reply is delivered or dropped
    expires_at: float
    attempts: int = 0


@dataclass
class _Logs:
    run_id: int
    lines: list[str]
    attempts: int = 0


class Outbox:
    def __init__(
        self,
        connection: FleetConnection,
        node_id: Callable[[], int],
        stream: Callable[[int], NodeStream | None] = lambda node_id: None,
    ) -> None:
        """``stream(node_id)``: that node's open stream, if any (replies go up it)."""
        self._conn = connection
        self._node_id = node_id
        self._stream = stream
        self._items: deque[_Reply | _Logs] = deque()
        self._changed = threading.Condition()
        self._closing = False
        self._closed = threading.Event()  # ends the waits between attempts
        self._deadline = float("inf")

    def reply(self, run_id: int, message: Envelope, objects: dict[str, OpenObject]) -> None:
        ttl = message.ttl
        expires_at = time.time() + ttl if ttl > 0 else float("inf")
        self._put(_Reply(run_id, message, objects, expires_at))

    def fail(self, message: Envelope, code: int, reason: str) -> None:
        """Answer ``message`` with an error reply on its ClientApp's behalf."""
        self.reply(message.run_id, error_reply(message, code, reason), {})

    def logs(self, run_id: int, lines: list[str]) -> None:
        if not lines:
            return
        with self._changed:
            if sum(isinstance(i, _Logs) for i in self._items) >= MAX_PENDING_LOG_BATCHES:
                return  # the SuperLink is away for long: drop app output rather than grow
        self._put(_Logs(run_id, lines))

    def _put(self, item: _Reply | _Logs) -> None:
        with self._changed:
            self._items.append(item)
            self._changed.notify_all()

    def close(self, timeout: float) -> None:
        """Send what is queued (one attempt each) for up to ``timeout`` s; `run` then returns."""
        with self._changed:
            self._closing = True
            self._closed.set()
            self._deadline = time.monotonic() + timeout
            self._changed.notify_all()

    def run(self) -> None:
        while True:
            with self._changed:
                while not self._items and not self._closing:
                    self._changed.wait(1.0)
                if not self._items or time.monotonic() > self._deadline:
                    for left in self._items:  # never sent: their objects' files are let go
                        _close(left)
                    return
                item = self._items[0]
            try:
                self._deliver(item)
            finally:
                _close(item)
            with self._changed:
                self._items.popleft()

    def _deliver(self, item: _Reply | _Logs) -> None:
        """Retried with backoff while `_send` says so; once closing, one attempt each."""
        with contextlib.suppress(_Again):  # given up: dropped, logged by `_failed`
            retry(lambda: self._send(item), retry_on=(_Again,), stop=self._closed)

    def _send(self, item: _Reply | _Logs) -> None:
        """Send the item, or drop it; raises `_Again` when it is worth retrying."""
        node_id = self._node_id()
        item.attempts += 1
        try:
            if isinstance(item, _Reply):
                if item.objects:
                    what = f"run {item.run_id}: sending a reply's {len(item.objects)} objects"
                    progress = TransferLog(what, log)
                    self._conn.push_objects(node_id, item.run_id, item.objects, progress)
                self._push(node_id, item.message)
                log.debug("run %d: reply %s sent", item.run_id, item.message.message_id)
            else:
                prefixed = [f"[node {node_id}] {line}" for line in item.lines]
                self._conn.push_logs(node_id, item.run_id, prefixed)
        except Stopped:
            return
        except CorollaError as exc:
            if not self._failed(item, exc):
                raise _Again(str(exc)) from exc

    def _push(self, node_id: int, message: Envelope) -> None:
        """Up the node's open stream, or as a call if it has none (or it ends meanwhile: a
        reply is stored once however often it is sent)."""
        if (stream := self._stream(node_id)) is not None:
            try:
                stream.push([message])
                return
            except StreamEnded:
                pass
        self._conn.push_messages(node_id, [message])

    def _failed(self, item: _Reply | _Logs, exc: CorollaError) -> bool:
        """False when the item is worth another attempt; True when it is dropped (logged)."""
        what = (
            f"reply to {item.message.reply_to_message_id}"
            if isinstance(item, _Reply)
            else f"{len(item.lines)} log lines"
        )
        if self._closing:
            again = False
        elif isinstance(item, _Logs):
            again = isinstance(exc, _AWAY + _REFUSED) and item.attempts < LOG_ATTEMPTS
        elif isinstance(exc, _AWAY):
            again = time.time() < item.expires_at
        else:
            again = isinstance(exc, _REFUSED) and item.attempts < REFUSED_ATTEMPTS
        if again:
            log.warning("run %d: cannot send %s yet: %s", item.run_id, what, exc)
            return False
        log.error("run %d: dropping %s: %s", item.run_id, what, exc)
        return True


def _close(item: _Reply | _Logs) -> None:
    if isinstance(item, _Reply):
        for source in item.objects.values():
            source.close()
