"""The one retry policy: `Backoff` delays and `retry`."""

from __future__ import annotations

import threading

import pytest

from corolla.common.backoff import Backoff, retry
from corolla.common.errors import CorollaError, DeadlineExceeded, NotFound, Unavailable


class Flaky:
    """Fails with ``errors`` in turn, then returns ``"ok"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay

    def clock(self) -> float:
        return self.now


def no_jitter() -> Backoff:
    return Backoff(rng=lambda: 0.5)


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(initial=0.5, cap=3.0, rng=lambda: 0.5)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.attempts == 5
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_backoff_jitter_stays_within_its_spread_and_under_the_cap() -> None:
    low = Backoff(initial=1.0, cap=10.0, jitter=0.2, rng=lambda: 0.0)
    high = Backoff(initial=8.0, cap=10.0, jitter=0.2, rng=lambda: 1.0)
    assert low.next_delay() == pytest.approx(0.8)
    assert high.next_delay() == 9.6
    assert high.next_delay() == 10.0  # 16 * 1.2 capped


def test_retry_returns_after_transient_failures_with_growing_waits() -> None:
    fake = FakeTime()
    call = Flaky(Unavailable("down"), DeadlineExceeded("slow"), Unavailable("down"))
    assert retry(call, backoff=no_jitter(), sleep=fake.sleep) == "ok"
    assert call.calls == 4
    assert fake.sleeps == [0.5, 1.0, 2.0]


def test_retry_passes_other_errors_through_at_once() -> None:
    fake = FakeTime()
    call = Flaky(NotFound("gone"))
    with pytest.raises(NotFound):
        retry(call, sleep=fake.sleep)
    assert call.calls == 1 and fake.sleeps == []


def test_retry_on_chosen_classes_only() -> None:
    fake = FakeTime()
    call = Flaky(NotFound("not yet"), Unavailable("down"))
    with pytest.raises(Unavailable):
        retry(call, retry_on=(NotFound,), sleep=fake.sleep, backoff=no_jitter())
    assert call.calls == 2 and fake.sleeps == [0.5]


def test_retry_gives_up_after_the_attempt_limit_with_the_last_error() -> None:
    fake = FakeTime()
    call = Flaky(*(Unavailable(f"down {i}") for i in range(10)))
    with pytest.raises(Unavailable, match="down 2"):
        retry(call, attempts=3, sleep=fake.sleep, backoff=no_jitter())
    assert call.calls == 3 and fake.sleeps == [0.5, 1.0]


def test_retry_timeout_shortens_the_last_wait_then_gives_up() -> None:
    fake = FakeTime()
    call = Flaky(*(Unavailable("down") for _ in range(10)))
    with pytest.raises(Unavailable):
        retry(call, timeout=2.0, sleep=fake.sleep, clock=fake.clock, backoff=no_jitter())
    assert fake.sleeps == [0.5, 1.0, 0.5]  # the third wait ends on the deadline
    assert call.calls == 4  # one last call at the deadline
    assert fake.now == 2.0


def test_retry_stops_waiting_and_calling_once_stop_is_set() -> None:
    stop = threading.Event()
    calls: list[float] = []

    def sleep(delay: float) -> None:
        calls.append(delay)
        stop.set()  # the node is stopping while we wait

    call = Flaky(*(Unavailable("down") for _ in range(10)))
    with pytest.raises(Unavailable):
        retry(call, stop=stop, sleep=sleep)
    assert call.calls == 1 and len(calls) == 1


def test_retry_with_stop_already_set_makes_one_call_and_no_wait() -> None:
    stop = threading.Event()
    stop.set()
    call = Flaky(Unavailable("down"))
    with pytest.raises(Unavailable):
        retry(call, stop=stop, sleep=lambda d: pytest.fail("must not wait"))
    assert call.calls == 1


def test_retry_default_sleep_is_the_stop_event() -> None:
    stop = threading.Event()
    threading.Timer(0.05, stop.set).start()
    call = Flaky(*(Unavailable("down") for _ in range(10)))
    with pytest.raises(Unavailable):  # a 60 s wait ends when stop is set
        retry(call, stop=stop, backoff=Backoff(initial=60.0, cap=60.0))
    assert call.calls == 1


def test_retry_reports_each_retry_to_on_retry() -> None:
    seen: list[tuple[int, str, float]] = []
    call = Flaky(Unavailable("a"), Unavailable("b"))
    retry(
        call,
        on_retry=lambda n, exc, delay: seen.append((n, str(exc), delay)),
        sleep=lambda d: None,
        backoff=no_jitter(),
    )
    assert seen == [(1, "a", 0.5), (2, "b", 1.0)]


def test_retry_refuses_a_zero_attempt_limit() -> None:
    with pytest.raises(ValueError):
        retry(Flaky(), attempts=0)


def test_retry_on_the_root_class_retries_every_corolla_error() -> None:
    call = Flaky(NotFound("x"), Unavailable("y"))
    assert retry(call, retry_on=(CorollaError,), sleep=lambda d: None) == "ok"
