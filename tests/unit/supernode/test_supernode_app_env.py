"""The environment of a flwr-clientapp the SuperNode starts: the allow-list, --app-env, its
token; never the AppIo secret or the node's other secrets. A real child writes down what it saw."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from corolla.common.appio import SECRET_ENV, TOKEN_ENV
from corolla.supernode import launcher
from corolla.supernode.launcher import AppProcess

pytestmark = pytest.mark.timeout(60)


def test_the_child_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = tmp_path / "seen.json"
    script = (
        f"import json, os, pathlib; p = pathlib.Path({str(seen)!r}); "
        "t = p.with_suffix('.tmp'); t.write_text(json.dumps(dict(os.environ))); t.rename(p)"
    )
    monkeypatch.setattr(
        launcher, "clientapp_command", lambda *args, **kwargs: [sys.executable, "-c", script]
    )
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv(SECRET_ENV, "s" * 32)
    monkeypatch.setenv("PROBE_PASSED", "yes")
    monkeypatch.setenv("PROBE_BLOCKED", "no")
    exited = threading.Event()
    codes: list[int] = []

    def on_exit(process: AppProcess, code: int) -> None:
        codes.append(code)
        exited.set()

    process = AppProcess.spawn(
        run_id=1,
        address="127.0.0.1:1",
        token="the-run-token",
        on_exit=on_exit,
        app_env=("PROBE_PASSED",),
    )
    process.watch()
    assert exited.wait(30) and process.join(5)
    assert codes == [0]
    env = json.loads(seen.read_text())
    assert env[TOKEN_ENV] == "the-run-token"
    assert env["PATH"] and env["PROBE_PASSED"] == "yes" and env["PYTHONUNBUFFERED"] == "1"
    for name in ("AWS_SECRET_ACCESS_KEY", SECRET_ENV, "PROBE_BLOCKED"):
        assert name not in env
