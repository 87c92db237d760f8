"""`flwr audit`: the SuperLink's audit trail of Exec calls (who did what, allowed or not)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from corolla.cli.commands._shared import AppDir, FederationName, Format, open_client
from corolla.cli.output import format_time, iso_time


def audit(
    app_dir: AppDir = Path("."),
    federation: FederationName = None,
    user: Annotated[
        str, typer.Option("--user", help="Only this user's calls.", show_default=False)
    ] = "",
    run_id: Annotated[
        int, typer.Option("--run-id", min=0, help="Only calls about this run.", show_default=False)
    ] = 0,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="At most this many, newest first.")
    ] = 100,
    output_format: Annotated[
        Format, typer.Option("--format", help="table for people, json for scripts.")
    ] = Format.TABLE,
) -> None:
    """Show who called the Exec API of FEDERATION, what they did, and whether it was allowed
    (admins only when user login is on)."""
    with open_client(app_dir, federation, purpose="flwr audit", simulation=False) as client:
        events = client.list_audit(user=user, run_id=run_id, limit=limit)
    if output_format is Format.JSON:
        doc = [
            {
                "event_id": e.event_id,
                "at": iso_time(e.at),
                "user": e.user,
                "action": e.action,
                "run_id": e.run_id or None,
                "allowed": e.allowed,
                "reason": e.reason,
                "peer": e.peer,
            }
            for e in events
        ]
        print(json.dumps(doc, indent=2, sort_keys=True))
        return
    print(f"{'At':<20}  {'User':<16}  {'Action':<15}  {'Run':<20}  Result")
    for e in events:
        result = "allowed" if e.allowed else "DENIED"
        if e.reason:
            result += f": {e.reason}"
        run = str(e.run_id) if e.run_id else "-"
        print(f"{format_time(e.at):<20}  {e.user or '-':<16}  {e.action:<15}  {run:<20}  {result}")
