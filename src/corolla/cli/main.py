"""Entry point of `flwr`: the command tree, and the one place errors become exit codes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Annotated

import typer
from typer.main import get_command

try:  # recent typer releases ship their own copy of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException  # type: ignore[import-not-found, no-redef, assignment, unused-ignore]

from corolla import __version__
from corolla.cli.commands import (
    audit,
    build,
    certs,
    local,
    log,
    login,
    ls,
    new,
    run,
    supernode,
)
from corolla.cli.follow import RunFailed, RunStopped
from corolla.common import errors
from corolla.common.exit import exit_with

INTERRUPTED = 130

EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (RunStopped, 6),
    (RunFailed, 1),
    (errors.InvalidArgument, 2),
    (errors.NotFound, 3),
    (errors.Unavailable, 4),
    (errors.DeadlineExceeded, 4),
    (errors.Unauthenticated, 5),
    (errors.PermissionDenied, 5),
    (errors.CorollaError, 1),
    (OSError, 1),
]
"""First match wins. Usage errors exit 2, like InvalidArgument; Ctrl-C exits 130."""
_HANDLED = tuple(cls for cls, _ in EXIT_CODES)

EPILOG = """\b
Exit codes:
  0    success (run --stream, log --follow: the run completed)
  1    error, or the run failed
  2    invalid argument or usage
  3    not found (e.g. an unknown run id)
  4    SuperLink unreachable or too slow to answer
  5    not logged in, or not allowed
  6    the run was stopped
  130  interrupted (Ctrl-C)"""

app = typer.Typer(
    name="flwr",
    help="Create, build and run Corolla apps on a federation, and follow their runs.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command()(new.new)
app.command()(build.build)
app.command()(run.run)
app.command()(ls.ls)
app.command()(log.log)
app.command()(log.stop)
app.command()(certs.certs)
app.command()(login.login)
app.command()(login.logout)
app.command()(audit.audit)
app.add_typer(supernode.app)
app.add_typer(local.app)


def _show_version(value: bool) -> None:
    if value:
        print(f"flwr (Corolla) {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Create, build and run Corolla apps on a federation, and follow their runs."""


def exit_code_for(exc: BaseException) -> int:
    return next(code for cls, code in EXIT_CODES if isinstance(exc, cls))


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Run `flwr` with ``argv`` (default: the process's); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = " ".join(["flwr", *[a for a in args[:1] if not a.startswith("-")]])
    try:
        result = get_command(app).main(args, prog_name="flwr", standalone_mode=False)
    except ClickException as exc:
        exc.show()
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return INTERRUPTED
    except _HANDLED as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    return result if isinstance(result, int) else 0


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="flwr: %(levelname)s: %(message)s")
    exit_with(run_cli())
