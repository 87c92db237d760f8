"""A background worker logs a failed tick and goes on; only a run of failures ends it."""

from __future__ import annotations

import pytest

from corolla.superlink._worker import MAX_FAILED_TICKS, serve_ticks


def test_a_failed_tick_is_logged_and_the_next_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def tick() -> None:
        calls.append(len(calls))
        if len(calls) == 2:
            raise RuntimeError("one bad tick")

    assert serve_ticks("worker", tick, lambda: len(calls) >= 5) is None
    assert len(calls) == 5
    assert "one bad tick" in caplog.text  # with its traceback


def test_a_run_of_failures_ends_the_worker_with_the_error() -> None:
    calls: list[int] = []

    def tick() -> None:
        calls.append(1)
        raise ValueError("broken for good")

    error = serve_ticks("worker", tick, lambda: False)
    assert isinstance(error, ValueError)
    assert len(calls) == MAX_FAILED_TICKS
