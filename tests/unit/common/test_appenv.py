"""The environment of app processes: an allow-list, the operator's --app-env, never a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from corolla.common.appenv import ALLOWED, NEVER, app_environment, env_names
from corolla.common.appio import SECRET_ENV, TOKEN_ENV
from corolla.common.config import UsageError
from corolla.common.grpc import KEEPALIVE_ENV
from corolla.common.paths import HOME_ENV
from corolla.fab.gc import MAX_AGE_ENV
from corolla.fab.limits import ENV as FAB_LIMIT_ENV
from corolla.superlink.config import parse_config
from corolla.supernode.config import parse_args

DAEMON = {
    "PATH": "/usr/bin",
    "HOME": "/home/op",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "CUDA_VISIBLE_DEVICES": "1",
    "OMP_NUM_THREADS": "4",
    "COROLLA_HOME": "/srv/corolla",
    "COROLLA_GRPC_KEEPALIVE_SECONDS": "15",
    # what must stay behind
    "AWS_SECRET_ACCESS_KEY": "hunter2",
    "GOOGLE_APPLICATION_CREDENTIALS": "/secrets/gcp.json",
    "SSH_AUTH_SOCK": "/tmp/agent.sock",
    "https_proxy": "http://user:password@proxy:3128",
    "LD_PRELOAD": "/tmp/evil.so",
    SECRET_ENV: "s" * 32,
    TOKEN_ENV: "a token of another run",
    "COROLLA_APPIO_SECRET_FILE": "/secrets/appio",
    "COROLLA_SSL_KEYFILE": "/secrets/server.key",
    "COROLLA_DATABASE": "/srv/corolla/state.db",
    "MY_SETTING": "kept only on request",
}
PASSED = {
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "COROLLA_HOME",
    "COROLLA_GRPC_KEEPALIVE_SECONDS",
}


def test_only_allowed_names_pass() -> None:
    assert set(app_environment(environ=DAEMON)) == PASSED
    assert app_environment(environ=DAEMON)["PATH"] == "/usr/bin"


def test_operator_names_pass_but_never_a_secret() -> None:
    env = app_environment(["MY_SETTING", SECRET_ENV, TOKEN_ENV, "UNSET"], environ=DAEMON)
    assert set(env) == PASSED | {"MY_SETTING"}


def test_what_the_launcher_sets_wins() -> None:
    env = app_environment(explicit={TOKEN_ENV: "mine", "PATH": "/bin"}, environ=DAEMON)
    assert env[TOKEN_ENV] == "mine"
    assert env["PATH"] == "/bin"


def test_the_app_process_settings_corolla_reads_are_allowed() -> None:
    """Every variable an app process reads about itself is on the list; secrets never are."""
    read_by_app_processes = {HOME_ENV, KEEPALIVE_ENV, MAX_AGE_ENV, *FAB_LIMIT_ENV.values()}
    assert read_by_app_processes <= ALLOWED
    assert {SECRET_ENV, TOKEN_ENV} <= NEVER
    assert not NEVER & ALLOWED
    assert {name for name in ALLOWED if name.startswith("COROLLA_")} == read_by_app_processes


def test_env_names() -> None:
    assert env_names("A") == ("A",)
    assert env_names(" A , ,B_2,A") == ("A", "B_2")
    assert env_names("") == ()
    for bad in ("1A", "A-B", "A B", "A=1"):
        with pytest.raises(ValueError, match="not an environment variable name"):
            env_names(bad)
    with pytest.raises(ValueError, match="never passed"):
        env_names(f"A,{SECRET_ENV}")


SUPERLINK = ["--insecure", "--database", ":memory:"]
SUPERNODE = ["--insecure"]


def test_app_env_is_repeatable_or_a_comma_list_on_both_daemons(tmp_path: Path) -> None:
    flags = ["--app-env", "A", "--app-env", "B,C", "--app-env", "A"]
    assert parse_config([*SUPERLINK, *flags], environ={}).app_env == ("A", "B", "C")
    assert parse_args([*SUPERNODE, *flags], environ={}).app_env == ("A", "B", "C")
    environ = {"COROLLA_APP_ENV": "X,Y"}
    assert parse_config(SUPERLINK, environ=environ).app_env == ("X", "Y")
    assert parse_args(SUPERNODE, environ=environ).app_env == ("X", "Y")
    config = tmp_path / "corolla.toml"
    config.write_text('[superlink]\napp-env = ["P", "Q"]\n[supernode]\napp-env = "R"\n')
    assert parse_config([*SUPERLINK, "--config", str(config)], environ={}).app_env == ("P", "Q")
    assert parse_args([*SUPERNODE, "--config", str(config)], environ={}).app_env == ("R",)
    assert parse_config(SUPERLINK, environ={}).app_env == ()
    assert parse_args(SUPERNODE, environ={}).app_env == ()


@pytest.mark.parametrize("value", [SECRET_ENV, "NOT-A-NAME"])
def test_a_bad_app_env_is_a_usage_error(value: str) -> None:
    with pytest.raises(UsageError, match="--app-env"):
        parse_config([*SUPERLINK, "--app-env", value], environ={})
    with pytest.raises(UsageError, match="--app-env"):
        parse_args([*SUPERNODE, "--app-env", value], environ={})
