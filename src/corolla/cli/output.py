"""How runs are shown: a table for people, JSON with stable keys for scripts."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from corolla.cli.exec_client import FAILED, STOPPED, RunInfo, RunList

TABLE_COLUMNS = (
    "Run ID",
    "App",
    "Owner",
    "Status",
    "Pending at",
    "Running at",
    "Finished at",
    "Elapsed",
    "Details",
)
_STATUS_STYLES = {"completed": "green", FAILED: "red", STOPPED: "yellow", "running": "cyan"}
_PLAIN_WIDTH = 1000  # not a terminal: never wrap or cut cells


def format_time(timestamp: float) -> str:
    """``2024-05-01T12:00:03Z`` (UTC, whole seconds); ``-`` for 0 (not reached)."""
    if timestamp <= 0:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_time(timestamp: float) -> str | None:
    """ISO 8601 in UTC with microseconds, or None for 0 (not reached)."""
    if timestamp <= 0:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def elapsed_seconds(run: RunInfo, now: float) -> float:
    """Time spent running: until it finished, or until ``now`` (the SuperLink's clock)."""
    if run.running_at <= 0:
        return 0.0
    end = run.finished_at if run.finished_at > 0 else now
    return max(0.0, end - run.running_at)


def format_duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


def run_to_json(run: RunInfo, now: float) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "app": run.app,
        "fab_id": run.fab_id,
        "fab_version": run.fab_version,
        "fab_hash": run.fab_hash,
        "federation": run.federation,
        "owner": run.owner,
        "status": run.status.status,
        "sub_status": run.status.sub_status,
        "details": run.status.details,
        "pending_at": iso_time(run.pending_at),
        "starting_at": iso_time(run.starting_at),
        "running_at": iso_time(run.running_at),
        "finished_at": iso_time(run.finished_at),
        "elapsed_seconds": round(elapsed_seconds(run, now), 3),
        "override_config": run.override_config,
        "run_config": run.run_config,
    }


def print_json(listing: RunList) -> None:
    doc = [run_to_json(run, listing.now) for run in listing.runs]
    print(json.dumps(doc, indent=2, sort_keys=True))


def print_table(listing: RunList) -> None:
    console = Console(file=sys.stdout, highlight=False)
    plain = not console.is_terminal
    if plain:
        console = Console(file=sys.stdout, highlight=False, no_color=True, width=_PLAIN_WIDTH)
    table = Table(box=None if plain else box.SIMPLE_HEAD, pad_edge=False)
    for title in TABLE_COLUMNS[:-1]:
        table.add_column(title, no_wrap=True)
    table.add_column(TABLE_COLUMNS[-1], overflow="fold", min_width=30)
    for run in listing.runs:
        style = "" if plain else _STATUS_STYLES.get(run.status.sub_status or run.status.status, "")
        cells = [
            str(run.run_id),
            run.app,
            run.owner or "-",
            str(run.status),
            format_time(run.pending_at),
            format_time(run.running_at),
            format_time(run.finished_at),
            format_duration(elapsed_seconds(run, listing.now)),
            _details(run),
        ]
        table.add_row(*(Text(cell, style=style if i == 3 else "") for i, cell in enumerate(cells)))
    if not plain:
        needed = console.measure(table, options=console.options.update_width(_PLAIN_WIDTH)).minimum
        if needed > console.width:
            console = Console(file=sys.stdout, highlight=False, width=needed)
        console.print(table)
        return
    with console.capture() as capture:
        console.print(table)
    print("\n".join(line.rstrip() for line in capture.get().splitlines()))


def _details(run: RunInfo) -> str:
    """The reason a run failed or was stopped (its last line, for a traceback)."""
    if run.status.sub_status not in (FAILED, STOPPED):
        return "-"
    lines = run.status.details.strip().splitlines()
    return lines[-1].strip() if lines else "-"
