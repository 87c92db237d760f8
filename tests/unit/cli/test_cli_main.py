"""The `flwr` entry point: version, help, and the one table from errors to exit codes."""

from __future__ import annotations

import re

import pytest

from corolla import __version__
from corolla.cli.follow import RunFailed, RunStopped
from corolla.cli.main import EPILOG, EXIT_CODES, exit_code_for, run_cli
from corolla.common import errors


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--version"]) == 0
    assert capsys.readouterr().out == f"flwr (Corolla) {__version__}\n"


def test_help_lists_the_commands_and_documents_every_exit_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_cli(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("new", "build", "run", "ls", "log", "stop"):
        assert re.search(rf"^\s+{command}\s", out, re.MULTILINE), command
    documented = {int(code) for code in re.findall(r"^\s+(\d+)\s", EPILOG, re.MULTILINE)}
    assert {code for _, code in EXIT_CODES} | {0, 2, 130} == documented
    assert "130  interrupted" in out


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.InvalidArgument("x"), 2),
        (errors.NotFound("x"), 3),
        (errors.Unavailable("x"), 4),
        (errors.DeadlineExceeded("x"), 4),
        (errors.Unauthenticated("x"), 5),
        (errors.PermissionDenied("x"), 5),
        (errors.FailedPrecondition("x"), 1),
        (errors.AlreadyExists("x"), 1),
        (errors.AppError("x"), 1),
        (RunFailed("x"), 1),
        (RunStopped("x"), 6),
        (PermissionError("x"), 1),
    ],
)
def test_exit_code_table(exc: BaseException, code: int) -> None:
    assert exit_code_for(exc) == code


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["nonsense"]) == 2
    assert "No such command" in capsys.readouterr().err
    assert run_cli(["ls", "--format", "yaml"]) == 2
    assert run_cli(["log", "0"]) == 2


def test_no_arguments_shows_help(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli([])
    out, err = capsys.readouterr()
    assert code == 2
    assert "Usage: flwr" in out + err
