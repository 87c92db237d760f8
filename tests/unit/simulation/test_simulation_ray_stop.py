"""`stop_ray` ends what a local Ray left behind: only the processes it is given, SIGKILL for
one that ignores SIGTERM, each reaped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from corolla.simulation.ray_backend import ray_children, stop_ray

pytestmark = pytest.mark.timeout(60)
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"


class FakeRay:
    def __init__(self) -> None:
        self.shut_down = False

    def shutdown(self) -> None:
        self.shut_down = True


def test_processes_left_after_shutdown_are_ended_and_reaped() -> None:
    children: list[subprocess.Popen[bytes]] = []
    started = ray_children(
        lambda: children.extend(
            subprocess.Popen([sys.executable, "-c", code])
            for code in (STUBBORN, "import time; time.sleep(60)")
        )
    )
    assert started == {child.pid for child in children}
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ray = FakeRay()
        stop_ray(ray, started, grace=0.5)
        assert ray.shut_down
        for child in children:
            assert not Path(f"/proc/{child.pid}").exists()  # ended and reaped (no zombie)
        assert bystander.poll() is None  # a process it was not given is left alone
    finally:
        bystander.kill()
        bystander.wait(10)
        for child in children:
            child.kill()
            child.wait(10)
