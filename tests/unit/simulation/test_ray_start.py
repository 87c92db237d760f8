"""Starting Ray: failed starts are shut down and tried again, bad arguments are not, and Ray
is told to report no usage statistics. A stand-in ``ray`` module records the calls."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from corolla.common.errors import InvalidArgument, Unavailable
from corolla.simulation.ray_backend import start_ray


def fake_ray(monkeypatch: pytest.MonkeyPatch, *failures: BaseException) -> SimpleNamespace:
    calls: list[str] = []
    pending = list(failures)

    def init(**kwargs: Any) -> None:
        calls.append(f"init {sorted(kwargs.items())}")
        if pending:
            raise pending.pop(0)

    ray = SimpleNamespace(
        init=init, shutdown=lambda: calls.append("shutdown"), calls=calls, is_initialized=bool
    )
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")  # restored after the test
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED")
    return ray


def test_a_start_that_times_out_is_shut_down_and_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timeout = Exception("The current node timed out during startup.")
    ray = fake_ray(monkeypatch, timeout, ConnectionError("GCS unreachable"))
    waits: list[float] = []
    assert start_ray({"num_cpus": 2}, sleep=waits.append) is ray
    init = "init [('include_dashboard', False), ('log_to_driver', True), ('num_cpus', 2)]"
    assert ray.calls == [init, "shutdown", init, "shutdown", init]
    assert len(waits) == 2


def test_three_failed_starts_give_an_unavailable_error_with_rays_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ray = fake_ray(monkeypatch, *(Exception(f"timed out {n}") for n in range(3)))
    with pytest.raises(Unavailable, match="Ray did not start: timed out 2"):
        start_ray({}, sleep=lambda _: None)
    assert ray.calls.count("shutdown") == 3


def test_arguments_ray_refuses_are_an_invalid_argument_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ray = fake_ray(monkeypatch, TypeError("init() got an unexpected keyword argument 'cpus'"))
    with pytest.raises(InvalidArgument, match="unexpected keyword argument 'cpus'"):
        start_ray({"cpus": 2}, sleep=lambda _: None)
    assert len(ray.calls) == 1


def test_ray_is_told_to_report_no_usage_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ray(monkeypatch)
    start_ray({}, sleep=lambda _: None)
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
