"""Helpers for the SuperNode tests: a tiny app, its FAB, waits, external app processes.

Delivery is tested against a real SuperLink (`real_superlink.py`), never a fake Fleet API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from corolla.common.appio import SECRET_ENV
from corolla.fab import build_fab

PYPROJECT = """
[project]
name = "{name}"
version = "1.0.0"

[tool.flwr.app]
publisher = "tests"

[tool.flwr.app.components]
serverapp = "{module}:app"
clientapp = "{module}:app"

[tool.flwr.app.config]
lr = 0.5
"""

CLIENT_APP = """
import logging
import os
import time

from corolla.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp

APP_VERSION = "v1"
app = ClientApp()
log = logging.getLogger("testapp")


@app.train()
def train(msg, context):
    count = context.state["counter"]["count"] + 1 if "counter" in context.state else 1
    context.state["counter"] = MetricRecord({"count": count})
    action = msg.content["cfg"]["action"]
    if action == "raise":
        raise RuntimeError("boom from the app")
    if action == "hang":
        print("hanging now", flush=True)
        time.sleep(120)
    log.info("handled message %d", count)
    content = RecordDict(
        {
            "out": MetricRecord({"pid": os.getpid(), "count": count}),
            "node": ConfigRecord(dict(context.node_config)),
            "run": ConfigRecord(dict(context.run_config)),
            "env": ConfigRecord(
                {
                    "version": APP_VERSION,
                    "home": os.environ.get("COROLLA_HOME", ""),
                    "cwd": os.getcwd(),
                }
            ),
        }
    )
    if "arrays" in msg.content:
        doubled = [a * 2 for a in msg.content["arrays"].to_numpy_ndarrays()]
        content["arrays"] = ArrayRecord.from_numpy_ndarrays(doubled)
    return Message(content, reply_to=msg)
"""


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie waiting for someone else to reap it has stopped running
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def make_fab(
    root: Path, module_source: str = CLIENT_APP, name: str = "testapp"
) -> tuple[bytes, str]:
    app_dir = root / name
    app_dir.mkdir(parents=True)
    module = f"{name}_client"
    (app_dir / "pyproject.toml").write_text(PYPROJECT.format(name=name, module=module))
    (app_dir / f"{module}.py").write_text(textwrap.dedent(module_source))
    built = build_fab(app_dir)
    return built.data, built.fab_hash


APPIO_SECRET = "the-appio-secret-of-these-tests"


class AppProcesses:
    """Externally managed `flwr-clientapp` processes (isolation process); all reaped at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[subprocess.Popen[str]] = []

    def env(self, **extra: str) -> dict[str, str]:
        """A minimal environment of its own: PATH, its own COROLLA_HOME, the secret."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "COROLLA_HOME": str(self.root / "app-home"),
            "PYTHONUNBUFFERED": "1",
            SECRET_ENV: APPIO_SECRET,
            **extra,
        }

    def start(
        self,
        address: str,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[str]:
        log_path = self.root / f"clientapp-{len(self.started)}.log"
        with log_path.open("w") as log_file:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "corolla.runtime.clientapp",
                    "--clientappio-api-address",
                    address,
                    *args,
                ],
                env=self.env() if env is None else env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.started.append(process)
        return process

    def output(self, process: subprocess.Popen[str]) -> str:
        return (self.root / f"clientapp-{self.started.index(process)}.log").read_text()

    def reap(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(10)
