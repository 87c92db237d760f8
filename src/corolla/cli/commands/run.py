"""`flwr run`: submit the app to a federation, and with ``--stream`` follow it to its end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from corolla.cli.commands._shared import AppDir, FederationName, app_and_federation, connect
from corolla.cli.config import (
    Federation,
    check_overrides,
    parse_run_config,
    resolve_federation,
)
from corolla.cli.follow import check_completed, follow_logs, status_line
from corolla.common.protocol import NUM_SUPERNODES_OPTION
from corolla.fab import ConfigValue, build_fab, load_app_config

RunConfig = Annotated[
    list[str] | None,
    typer.Option(
        "--run-config",
        help='Overrides of [tool.flwr.app.config]: "key=value ..." with TOML values '
        "(lr=0.1 name='x'), or a .toml file. May repeat; later ones win.",
        show_default=False,
    ),
]
Stream = Annotated[
    bool,
    typer.Option(
        "--stream", help="Print the run's logs until it ends; exit 0 only if it completed."
    ),
]


def run(
    app_dir: AppDir = Path("."),
    federation: FederationName = None,
    run_config: RunConfig = None,
    stream: Stream = False,
) -> None:
    """Start a run of the app in APP_DIR on FEDERATION.

    A simulation federation (options.num-supernodes, no address) runs on the local SuperLink
    that flwr starts on this machine if none is running (docs/federations.md)."""
    app_dir, federation = app_and_federation(app_dir, federation)
    config = load_app_config(app_dir)
    fed = resolve_federation(config, federation, app_dir)
    overrides = check_overrides(parse_run_config(run_config or []), config.run_config)
    fab = build_fab(app_dir)
    with connect(fed, app_dir, start_local=True) as client:
        run_id = client.start_run(
            fab.data,
            fab.fab_hash,
            override_config=overrides,
            federation=fed.name,
            federation_options=federation_options(fed),
        )
        print(f"Started run {run_id}", flush=True)
        if stream:
            status = follow_logs(client, run_id)
            print(status_line(run_id, status), flush=True)
            check_completed(run_id, status)


def federation_options(fed: Federation) -> dict[str, ConfigValue]:
    """What StartRun carries: the federation's options as dotted keys (``options.backend.x``),
    and for a simulation ``options.num-supernodes``, which makes the run a simulation run."""
    if fed.num_supernodes is None:
        return dict(fed.options)
    return {**fed.options, NUM_SUPERNODES_OPTION: fed.num_supernodes}
