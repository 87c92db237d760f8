"""`flwr log` and `flwr stop`: a run's output, and ending a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from corolla.cli.commands._shared import (
    AppDir,
    FederationName,
    NoLocalSuperLink,
    RunId,
    open_client,
)
from corolla.cli.exec_client import ExecClient
from corolla.cli.follow import check_completed, follow_logs, print_logs, status_line
from corolla.common.errors import FailedPrecondition


def log(
    run_id: RunId,
    app_dir: AppDir = Path("."),
    federation: FederationName = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing until the run ends; exit 0 only if it completed."
        ),
    ] = False,
) -> None:
    """Print the log of run RUN_ID."""
    with _open(app_dir, federation, run_id) as client:
        if not follow:
            print_logs(client, run_id)
            return
        status = follow_logs(client, run_id)
    print(status_line(run_id, status), flush=True)
    check_completed(run_id, status)


def stop(run_id: RunId, app_dir: AppDir = Path("."), federation: FederationName = None) -> None:
    """Stop run RUN_ID."""
    with _open(app_dir, federation, run_id) as client:
        if client.stop_run(run_id):
            print(f"Stopped run {run_id}")
            return
        status = client.get_run(run_id).status
    raise FailedPrecondition(f"run {run_id} was not stopped (it is {status})")


def _open(app_dir: Path, federation: str | None, run_id: int) -> ExecClient:
    """`open_client`; with no local SuperLink for a simulation, the run is not found."""
    try:
        return open_client(app_dir, federation)
    except NoLocalSuperLink as exc:
        raise NoLocalSuperLink(f"run {run_id} not found: {exc}") from None
