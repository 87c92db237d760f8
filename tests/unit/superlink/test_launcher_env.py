"""What a flwr-serverapp process gets from the launcher: an allow-listed environment, private
output files. Real child processes that write down what they saw."""

from __future__ import annotations

import json
import stat
import sys
import time
from pathlib import Path

import pytest

from corolla.common.appio import SECRET_ENV, TOKEN_ENV
from corolla.fab import FabLimits
from corolla.superlink.heartbeats import AppHeartbeats
from corolla.superlink.launcher import ServerAppLauncher
from corolla.superlink.runs import Runs
from corolla.superlink.state import LinkState

pytestmark = pytest.mark.timeout(60)


def new_run(state: LinkState) -> int:
    state.store_fab("f" * 64, b"fab")
    return state.create_run(
        fab_id="p/app", fab_version="1", fab_hash="f" * 64, override_config={}, run_config={}
    )


def launcher(state: LinkState, out: Path, script: str, **kwargs: object) -> ServerAppLauncher:
    return ServerAppLauncher(
        Runs(state),
        "127.0.0.1:1",
        AppHeartbeats(),
        out,
        command=[sys.executable, "-c", script],
        **kwargs,  # type: ignore[arg-type]
    )


def test_the_child_gets_the_allow_list_its_token_and_the_operator_names(
    state: LinkState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "seen.json"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv(SECRET_ENV, "s" * 32)
    monkeypatch.setenv("PROBE_PASSED", "yes")
    monkeypatch.setenv("PROBE_BLOCKED", "no")
    script = (
        f"import json, os, pathlib, time; p = pathlib.Path({str(seen)!r}); "
        "t = p.with_suffix('.tmp'); t.write_text(json.dumps(dict(os.environ))); t.rename(p); "
        "time.sleep(60)"
    )
    app_launcher = launcher(
        state,
        tmp_path / "out",
        script,
        app_env=("PROBE_PASSED",),
        fab_limits=FabLimits(max_entries=7),
    )
    app_launcher.start()
    try:
        run_id = new_run(state)
        app_launcher.notify()
        deadline = time.monotonic() + 20
        while not seen.exists():
            assert time.monotonic() < deadline, "the child never ran"
            time.sleep(0.02)
        env = json.loads(seen.read_text())
        assert state.run_id_for_token(env[TOKEN_ENV]) == run_id  # its own run's token
    finally:
        app_launcher.stop()
    assert env["PATH"] and env["PROBE_PASSED"] == "yes" and env["PYTHONUNBUFFERED"] == "1"
    assert env["COROLLA_MAX_FAB_ENTRIES"] == "7"
    for name in ("AWS_SECRET_ACCESS_KEY", SECRET_ENV, "PROBE_BLOCKED"):
        assert name not in env


def test_the_output_directory_and_files_are_private(state: LinkState, tmp_path: Path) -> None:
    out = tmp_path / "serverapp-output"
    out.mkdir(mode=0o755)
    out.chmod(0o755)
    app_launcher = launcher(state, out, "import time; time.sleep(60)")
    app_launcher.start()
    try:
        assert stat.S_IMODE(out.stat().st_mode) == 0o700
        new_run(state)
        app_launcher.notify()
        deadline = time.monotonic() + 20
        while not list(out.iterdir()):
            assert time.monotonic() < deadline, "no output file"
            time.sleep(0.02)
        (log,) = out.iterdir()
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
    finally:
        app_launcher.stop()
