"""`flwr-clientapp` entry point: its command line, token handling and giving up on a lost node."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from corolla.runtime import clientapp
from corolla.runtime.clientapp import TOKEN_ENV, ClientAppProcessConfig, parse_args

pytestmark = pytest.mark.timeout(30)


def test_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "secret")
    config = parse_args(["--insecure", "--clientappio-api-address", "127.0.0.1:5"])
    assert (config.address, config.token, config.insecure) == ("127.0.0.1:5", "secret", True)


@pytest.mark.parametrize(
    ("argv", "token", "needle"),
    [(["--insecure"], "", TOKEN_ENV), ([], "secret", "--insecure")],
)
def test_missing_token_or_insecure_exits_2(
    argv: list[str],
    token: str,
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(TOKEN_ENV, token)
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_gives_up_when_the_supernode_stays_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clientapp, "UNREACHABLE_LIMIT", 0.5)
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
    assert result.returncode == 2 and TOKEN_ENV in result.stderr
