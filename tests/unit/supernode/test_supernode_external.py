"""The isolation-process watchdog with a fake clock: attach timeout, heartbeat timeout,
hand-out, finished runs and stopping; no sleeping."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from corolla.common.errors import Unavailable
from corolla.records import ConfigRecord, ErrorCode, Message, RecordDict
from corolla.records.wire import encode_messages
from corolla.supernode.connection import FleetConnection
from corolla.supernode.convert import envelope_from_proto, new_context
from corolla.supernode.domain import Envelope, Fab, RunInfo
from corolla.supernode.external import SILENT_REASON, ExternalApps, attach_reason
from corolla.supernode.outbox import Outbox
from corolla.supernode.runs import RunState, RunTable

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class RecordingOutbox(Outbox):
    def __init__(self, connection: FleetConnection) -> None:
        super().__init__(connection, lambda: 5)
        self.failed: list[tuple[str, int, str]] = []

    def fail(self, message: Envelope, code: int, reason: str) -> None:
        self.failed.append((message.message_id, code, reason))


class Harness:
    def __init__(self, outbox: RecordingOutbox) -> None:
        self.clock = Clock()
        self.runs = RunTable(attachable=True, clock=self.clock)
        self.outbox = outbox
        self.apps = ExternalApps(
            self.runs, outbox, app_address="127.0.0.1:9094", attach_timeout=30, heartbeat_timeout=5
        )
        self.state = self.open(3)

    def open(self, run_id: int) -> RunState:
        run = RunInfo(run_id, "tests/app", "1.0.0", "", override_config={}, run_config={})
        return self.runs.open(run, Fab("", b""), new_context(run_id, 5, {}, {}))

    def queue(self, state: RunState | None = None) -> str:
        state = state or self.state
        message = Message(RecordDict({"c": ConfigRecord({"x": 1})}), 5, "train")
        message.metadata.run_id = state.run_id
        envelope = envelope_from_proto(encode_messages([message])[0][0])
        assert self.runs.enqueue(state, envelope) == []
        self.apps.ensure_process(state)
        return envelope.message_id

    def tick(self, at: float) -> list[tuple[str, int, str]]:
        self.clock.now = at
        before = len(self.outbox.failed)
        self.apps.tick()
        return self.outbox.failed[before:]


@pytest.fixture
def h() -> Iterator[Harness]:
    connection = FleetConnection("127.0.0.1:1", insecure=True)  # never dialled
    yield Harness(RecordingOutbox(connection))
    connection.close()


def test_each_waiting_message_gets_an_error_after_the_attach_timeout(h: Harness) -> None:
    first = h.queue()
    h.clock.now = 110.0
    second = h.queue()
    assert h.tick(129.9) == []
    reason = attach_reason(30)
    assert h.tick(130.0) == [(first, ErrorCode.LOAD_CLIENT_APP_EXCEPTION, reason)]
    assert [m.message_id for m in h.state.queue] == [second]
    assert h.tick(140.0) == [(second, ErrorCode.LOAD_CLIENT_APP_EXCEPTION, reason)]
    assert not h.state.queue and not h.state.queued_at


def test_the_oldest_waiting_run_is_handed_out_once_with_a_fresh_token(h: Harness) -> None:
    other = h.open(4)
    assert h.runs.hand_out(0) is None  # nothing waits
    h.queue(other)
    h.clock.now = 101.0
    h.queue()
    old_token = other.token
    assert h.runs.hand_out(0) == (4, other.token) and other.token != old_token
    assert other.attached is not None and other.attached.since == 101.0
    assert h.runs.hand_out(0) == (3, h.state.token)
    assert h.runs.hand_out(0) is None  # both attached
    # Both go silent: detached, and their queued messages wait for the next process (the
    # attach timeout counts from the detach, so they are not failed for the earlier wait).
    assert h.tick(200.0) == []
    assert h.runs.needs_app(other) and h.runs.needs_app(h.state)
    assert h.runs.hand_out(0) is not None


def test_a_silent_app_process_is_detached_and_its_message_answered(h: Harness) -> None:
    held = h.queue()
    handed = h.runs.hand_out(0)
    assert handed is not None
    _, token = handed
    assert h.runs.next_message(h.state, 0, token) is not None  # now in flight
    h.clock.now = 104.0
    h.runs.by_token(token)  # any call with the token counts as a heartbeat
    assert h.tick(109.0) == []
    waiting = h.queue()  # queued while attached: no attach timeout runs for it

    assert h.tick(109.1) == [(held, ErrorCode.CLIENT_APP_RAISED_EXCEPTION, SILENT_REASON)]
    assert h.state.attached is None and h.runs.needs_app(h.state)
    with pytest.raises(Exception, match="unknown or expired app token"):
        h.runs.by_token(token)
    # The message that waited behind it waits for the next process from now on.
    assert h.tick(139.0) == []
    assert h.tick(139.1) == [(waiting, ErrorCode.LOAD_CLIENT_APP_EXCEPTION, attach_reason(30))]


def test_a_finished_run_is_forgotten_once_its_process_lets_go(h: Harness) -> None:
    h.queue()
    assert h.runs.hand_out(0) is not None
    h.apps.finish_run(3)
    assert h.runs.get(3) is h.state and not h.state.active  # its process learns it first
    h.apps.finish_run(3)  # repeated reports are harmless
    assert h.tick(106.0) == []  # silent after the end: no error replies
    assert h.runs.get(3) is None

    unattached = h.open(8)
    h.apps.finish_run(8)
    assert h.runs.get(8) is None and not unattached.active


def test_the_waiting_warning_comes_once_per_wait(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        h.queue()
        h.queue()
        h.tick(100.9)  # a process in a RequestRun long poll would have attached by now
        assert "none is attached" not in caplog.text
        h.tick(101.0)
        h.tick(102.0)
        assert caplog.text.count("none is attached") == 1
        assert "flwr-clientapp --clientappio-api-address 127.0.0.1:9094" in caplog.text
        h.tick(131.0)  # both expired: the wait is over
        h.queue()
        h.tick(132.0)
    assert caplog.text.count("none is attached") == 2


def test_stopping_answers_held_messages_and_ends_hand_outs(h: Harness) -> None:
    held = h.queue()
    handed = h.runs.hand_out(0)
    assert handed is not None
    assert h.runs.next_message(h.state, 0, handed[1]) is not None
    h.apps.stop_all()
    assert h.outbox.failed == [(held, ErrorCode.NODE_UNAVAILABLE, "the SuperNode stopped")]
    h.queue(h.open(9))
    started = time.monotonic()
    with pytest.raises(Unavailable, match="stopping"):  # at once: the table is closed
        h.runs.hand_out(10)
    assert time.monotonic() - started < 1
