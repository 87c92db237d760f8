"""`flwr ls`: the runs of a federation, or one run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from corolla.cli.commands._shared import (
    AppDir,
    FederationName,
    Format,
    NoLocalSuperLink,
    open_client,
)
from corolla.cli.exec_client import RunList
from corolla.cli.output import print_json, print_table


def ls(
    app_dir: AppDir = Path("."),
    federation: FederationName = None,
    run_id: Annotated[
        int | None, typer.Option("--run-id", min=1, help="Show only this run.", show_default=False)
    ] = None,
    output_format: Annotated[
        Format, typer.Option("--format", help="table for people, json for scripts.")
    ] = Format.TABLE,
) -> None:
    """List the runs on FEDERATION: status, times and why a run failed.

    On a simulation federation with no local SuperLink running, nothing is started: the listing
    is empty and a note on stderr says why (with --run-id: not found, exit 3)."""
    try:
        with open_client(app_dir, federation) as client:
            listing = client.list_runs(run_id or 0)
    except NoLocalSuperLink as exc:
        if run_id:
            raise NoLocalSuperLink(f"run {run_id} not found: {exc}") from None
        print(f"flwr ls: {exc}", file=sys.stderr)
        listing = RunList(runs=(), now=0.0)
    if output_format is Format.JSON:
        print_json(listing)
    else:
        print_table(listing)
