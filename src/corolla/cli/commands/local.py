"""`flwr local`: the local SuperLink `flwr run` starts for simulation federations."""

from __future__ import annotations

import typer

from corolla.cli.localsuperlink import (
    IDLE_TIMEOUT,
    LOG_FILE,
    local_superlink_dir,
    running_local_superlink,
    stop_local_superlink,
)

app = typer.Typer(
    name="local",
    help="The local SuperLink of simulation federations (started by `flwr run`, it exits "
    f"after {IDLE_TIMEOUT / 60:g} min idle).",
    no_args_is_help=True,
)


@app.command()
def status() -> None:
    """Say whether the local SuperLink runs, and where."""
    running = running_local_superlink()
    directory = local_superlink_dir()
    if running is None:
        print(f"No local SuperLink is running (state and logs: {directory}).")
        return
    print(
        f"The local SuperLink runs: pid {running.pid}, Exec {running.exec_address}, "
        f"logs {directory / LOG_FILE}."
    )


@app.command()
def stop() -> None:
    """Stop the local SuperLink now (unfinished runs go back to pending and resume when
    `flwr run` starts it again)."""
    stopped = stop_local_superlink()
    if stopped is None:
        print("No local SuperLink is running.")
        return
    print(f"Stopped the local SuperLink (pid {stopped.pid}).")
