"""`corolla.common.config`: precedence flag > env > file > default, validators, ready files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corolla.common.config import (
    Command,
    Option,
    UsageError,
    address,
    count,
    duration,
    read_ready_file,
    write_ready_file,
)
from corolla.common.errors import InvalidArgument

COMMAND = Command(
    prog="flower-test",
    table="test",
    description="a command for tests",
    options=(
        Option("--wait", "seconds", 5.0, duration, "SECONDS"),
        Option("--runs", "count", 2, count, "N"),
        Option("--link", "address", "127.0.0.1:1", address, "HOST:PORT"),
        Option("--fast", "switch", switch=True),
        Option("--mode", "choice", "a", choices=("a", "b")),
        Option("--own-file", "no env var", "x", env=False),
    ),
)


def config_file(tmp_path: Path, text: str) -> str:
    file = tmp_path / "corolla.toml"
    file.write_text(text)
    return str(file)


def test_defaults_when_nothing_is_given() -> None:
    values = COMMAND.parse([], environ={})
    assert values.get("wait", float) == 5.0 and values.get("runs", int) == 2
    assert values.get("fast", bool) is False and values.get("mode", str) == "a"
    assert not values.given("wait") and values.label("wait") == "--wait"


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    file = config_file(tmp_path, "[test]\nwait = 3\nruns = 7\nmode = 'b'\n[other]\nwait = 'x'\n")
    env = {"COROLLA_WAIT": "2", "COROLLA_RUNS": "4"}
    values = COMMAND.parse(["--config", file, "--wait", "1"], environ=env)
    assert values.get("wait", float) == 1.0  # flag
    assert values.get("runs", int) == 4  # env over file
    assert values.get("mode", str) == "b"  # file over default
    assert values.get("link", str) == "127.0.0.1:1"  # default
    assert values.sources["wait"] == "flag" and values.sources["runs"] == "COROLLA_RUNS"
    assert values.label("mode").endswith("[test] mode")
    assert COMMAND.parse(["--config", file], environ={}).get("wait", float) == 3.0
    assert COMMAND.parse(["--config", file], environ=env).get("wait", float) == 2.0


def test_switches_from_env_and_file(tmp_path: Path) -> None:
    assert COMMAND.parse([], environ={"COROLLA_FAST": "yes"}).get("fast", bool) is True
    assert COMMAND.parse([], environ={"COROLLA_FAST": "0"}).get("fast", bool) is False
    assert COMMAND.parse([], environ={"COROLLA_FAST": ""}).get("fast", bool) is False
    file = config_file(tmp_path, "[test]\nfast = true\n")
    assert COMMAND.parse(["--config", file], environ={}).get("fast", bool) is True
    with pytest.raises(UsageError, match="COROLLA_FAST: expected true or false"):
        COMMAND.parse([], environ={"COROLLA_FAST": "maybe"})


def test_env_off_option_ignores_its_variable() -> None:
    values = COMMAND.parse([], environ={"COROLLA_OWN_FILE": "y"})
    assert values.get("own-file", str) == "x"


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--wait", "nan"], {}, "--wait: must be a finite number"),
        (["--wait", "inf"], {}, "--wait: must be a finite number"),
        (["--wait", "-1"], {}, "--wait: must be a finite number"),
        (["--wait", "0"], {}, "--wait: must be a finite number"),
        (["--wait", "soon"], {}, "--wait: expected a number of seconds"),
        ([], {"COROLLA_WAIT": "-inf"}, "COROLLA_WAIT: must be a finite number"),
        (["--runs", "0"], {}, "--runs: must be at least 1"),
        (["--runs", "1.5"], {}, "--runs: expected a whole number"),
        (["--link", "nohostport"], {}, "--link: must be HOST:PORT"),
        (["--link", "::1:80"], {}, "--link: must be HOST:PORT"),
        (["--link", "h:65536"], {}, "--link: must be HOST:PORT"),
        (["--link", ":80"], {}, "--link: must be HOST:PORT"),
        (["--mode", "c"], {}, "invalid choice"),
        ([], {"COROLLA_MODE": "c"}, "COROLLA_MODE: must be one of a, b"),
        (["--no-such-flag"], {}, "unrecognized arguments"),
        (["--config", "/no/such/file.toml"], {}, "--config: cannot read"),
    ],
)
def test_bad_values_are_usage_errors(argv: list[str], env: dict[str, str], needle: str) -> None:
    with pytest.raises(UsageError) as info:
        COMMAND.parse(argv, environ=env)
    assert needle in str(info.value)
    assert isinstance(info.value, InvalidArgument) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[test]\nwait = 0\n", "[test] wait: must be a finite number"),
        ("[test]\nruns = true\n", "[test] runs: expected N, got True"),
        ("[test]\nwiat = 1\n", "unknown option 'wiat'"),
        ("[test\n", "not valid TOML"),
        ("test = 1\n", "must be a table"),
    ],
)
def test_bad_config_files_are_usage_errors(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        COMMAND.parse(["--config", config_file(tmp_path, text)], environ={})
    assert needle in str(info.value)


@pytest.mark.parametrize("text", ["127.0.0.1:0", "[::1]:9092", "[::]:65535", "link:1"])
def test_addresses_accepted(text: str) -> None:
    assert address(text) == text


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_duration_accepts_exactly_finite_positive_numbers(value: float) -> None:
    if math.isfinite(value) and value > 0:
        assert duration(repr(value)) == value
    else:
        with pytest.raises(ValueError):
            duration(repr(value))


def test_help_states_precedence_and_env_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        COMMAND.parse(["--help"], environ={})
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "flag > environment variable > config file (--config) > default" in out
    assert "COROLLA_WAIT" in out and "table [test]" in out
    assert "COROLLA_OWN_FILE" not in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        COMMAND.parse(["--version"], environ={})
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("flower-test (Corolla) ")


def test_ready_file_round_trip(tmp_path: Path) -> None:
    file = tmp_path / "sub" / "x.ready.json"
    assert read_ready_file(file) is None
    write_ready_file(file, {"node_id": 7, "pid": 1})
    assert read_ready_file(file) == {"node_id": 7, "pid": 1}
    assert [p.name for p in file.parent.iterdir()] == ["x.ready.json"]  # no temp file left
    file.write_text("[1]")
    with pytest.raises(InvalidArgument, match="JSON object"):
        read_ready_file(file)
