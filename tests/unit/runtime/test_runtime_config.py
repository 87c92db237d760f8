"""`flwr-serverapp` / `flwr-clientapp` configs (`corolla.runtime.config`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corolla.common.appio import SECRET_ENV, TOKEN_ENV
from corolla.common.config import UsageError
from corolla.runtime import serverapp
from corolla.runtime.config import parse_clientapp_config, parse_serverapp_config
from corolla.runtime.serverapp import ServerAppConfig

SECRET = "a-secret-of-enough-length"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (TOKEN_ENV, SECRET_ENV, "COROLLA_RETRY_WINDOW", "COROLLA_MAX_RUNS"):
        monkeypatch.delenv(name, raising=False)


def test_serverapp_retry_window_flag_env_default() -> None:
    env = {TOKEN_ENV: "t"}
    config = parse_serverapp_config(["--insecure"], environ=env)
    assert isinstance(config, ServerAppConfig)
    assert (config.token, config.retry_window, config.max_runs) == ("t", 600.0, None)
    config = parse_serverapp_config(["--insecure", "--retry-window", "30"], environ=env)
    assert config.retry_window == 30.0
    operator = {"COROLLA_RETRY_WINDOW": "45"}  # isolation process: no token, env applies
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SECRET_ENV, SECRET)
        config = parse_serverapp_config(["--insecure", "--max-runs", "2"], environ=operator)
    assert (config.retry_window, config.max_runs, config.secret) == (45.0, 2, SECRET)


def test_a_daemon_child_ignores_option_variables() -> None:
    """COROLLA_* meant for the daemon reach its children with its environment."""
    env = {TOKEN_ENV: "t", "COROLLA_RETRY_WINDOW": "nan", "COROLLA_ROOT_CERTIFICATES": "/x"}
    assert parse_serverapp_config(["--insecure"], environ=env).retry_window == 600.0
    assert parse_clientapp_config(["--insecure"], environ=env).token == "t"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--insecure", "--retry-window", "0"], "--retry-window: must be a finite number"),
        (["--insecure", "--retry-window", "inf"], "--retry-window: must be a finite number"),
        (["--insecure", "--max-runs", "0"], "--max-runs: must be at least 1"),
        (["--insecure", "--serverappio-api-address", "x"], "must be HOST:PORT"),
        ([], "give either --insecure or --root-certificates"),
    ],
)
def test_serverapp_usage_errors(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {TOKEN_ENV: "t"}
    with pytest.raises(UsageError) as info:
        parse_serverapp_config(argv, environ=env)
    assert needle in str(info.value)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(TOKEN_ENV, "t")
        with pytest.raises(SystemExit) as exit_info:
            serverapp.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("flwr-serverapp: ") and needle in err and err.count("\n") == 1


def test_serverapp_without_secret_or_token_is_refused() -> None:
    with pytest.raises(UsageError, match="no AppIo secret"):
        parse_serverapp_config(["--insecure"], environ={})


def test_clientapp_config_file(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text("[clientapp]\nmax-runs = 3\ninsecure = true\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SECRET_ENV, SECRET)
        config = parse_clientapp_config(["--config", str(file)], environ={})
    assert (config.max_runs, config.insecure, config.secret) == (3, True, SECRET)
    with pytest.raises(UsageError, match="--max-runs: must be 0"):
        parse_clientapp_config(["--insecure", "--max-runs", "-2"], environ={TOKEN_ENV: "t"})
