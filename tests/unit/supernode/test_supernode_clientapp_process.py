"""`flwr-clientapp` entry point: command line, secrets and tokens, giving up on a lost node,
interrupting an abandoned run, and forgetting an app's modules between runs."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corolla.clientapp import ClientApp
from corolla.common.appio import SECRET_ENV
from corolla.runtime import clientapp, clientapp_run
from corolla.runtime.clientapp import (
    TOKEN_ENV,
    ClientAppProcessConfig,
    Interrupter,
    RunAbandoned,
    parse_args,
)
from corolla.runtime.loader import load_component, unload

pytestmark = pytest.mark.timeout(30)
SECRET = "a-secret-of-enough-length"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(SECRET_ENV, raising=False)


def test_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "secret")
    config = parse_args(["--insecure", "--clientappio-api-address", "127.0.0.1:5"])
    assert (config.address, config.token, config.insecure) == ("127.0.0.1:5", "secret", True)
    assert not config.external and "secret" not in repr(config)
    assert not parse_args([]).insecure  # TLS with the system roots unless told otherwise


def test_process_isolation_takes_the_secret_from_env_or_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    config = parse_args(["--insecure", "--max-runs", "3"])
    assert config.external and (config.secret, config.max_runs) == (SECRET, 3)
    assert SECRET not in repr(config)
    secret_file = tmp_path / "secret"
    secret_file.write_text("another-secret-from-a-file\n")
    config = parse_args(["--insecure", "--appio-secret-file", str(secret_file)])
    assert config.secret == "another-secret-from-a-file"  # the file wins over the environment


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--insecure"], {}, f"--appio-secret-file PATH or set {SECRET_ENV}"),
        (["--insecure"], {SECRET_ENV: "short"}, "too short"),
        (["--insecure", "--appio-secret-file", "/no/such/file"], {}, "cannot read"),
        (["--insecure", "--root-certificates", "ca.pem"], {SECRET_ENV: SECRET}, "no TLS"),
        (["--insecure", "--max-runs", "2"], {TOKEN_ENV: "t"}, "isolation process only"),
        (["--insecure", "--max-runs", "-1"], {SECRET_ENV: SECRET}, "--max-runs"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str],
    env: dict[str, str],
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_gives_up_when_the_supernode_stays_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clientapp_run, "UNREACHABLE_LIMIT", 0.5)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    config = ClientAppProcessConfig(address=f"127.0.0.1:{port}", insecure=True, token="t")
    assert clientapp.run(config) == 1
    assert time.monotonic() - started < 10


def test_module_runs_as_a_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "corolla.runtime.clientapp", "--insecure"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2 and SECRET_ENV in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.fixture
def interrupter() -> Iterator[Interrupter]:
    previous = signal.getsignal(signal.SIGUSR1)
    interrupter = Interrupter()
    interrupter.install()
    yield interrupter
    signal.signal(signal.SIGUSR1, previous)


def test_an_abandoned_run_interrupts_the_app_call_only(interrupter: Interrupter) -> None:
    ended = threading.Event()
    threading.Timer(0.2, interrupter.interrupt).start()
    started = time.monotonic()
    with pytest.raises(RunAbandoned), interrupter.app_call(ended):
        time.sleep(10)  # an app call that would take long
    assert time.monotonic() - started < 3

    interrupter.interrupt()  # outside an app call: nothing happens
    time.sleep(0.1)
    ended.set()
    with pytest.raises(RunAbandoned), interrupter.app_call(ended):  # already over: not started
        pytest.fail("the app call ran for a run that is over")


APP = """
from corolla.clientapp import ClientApp
from {module}_helper import VERSION
app = ClientApp()
app.version = VERSION
"""


def make_app(root: Path, version: str, module: str = "samename") -> Path:
    root.mkdir(parents=True)
    (root / f"{module}.py").write_text(APP.format(module=module))
    (root / f"{module}_helper.py").write_text(f"VERSION = {version!r}\n")
    return root


def test_forgetting_an_app_lets_the_next_run_import_its_own_modules(tmp_path: Path) -> None:
    first, second = make_app(tmp_path / "v1", "v1"), make_app(tmp_path / "v2", "v2")
    try:
        app = load_component(first, "samename:app", ClientApp)
        assert getattr(app, "version", None) == "v1"
        unload(first)
        assert "samename" not in sys.modules and "samename_helper" not in sys.modules
        assert str(first) not in sys.path
        assert "pytest" in sys.modules  # other modules stay
        app = load_component(second, "samename:app", ClientApp)
        assert getattr(app, "version", None) == "v2"
    finally:
        unload(first)
        unload(second)
    assert str(second) not in sys.path and "samename" not in sys.modules
