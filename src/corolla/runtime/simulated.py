"""The grid a run's ServerApp gets: the SuperLink's (`GrpcGrid`), or for a simulation run (its
federation options hold ``options.num-supernodes``) a `SimulationGrid` of virtual SuperNodes whose
ClientApps run in worker processes beside this one. Everything else about the run (inputs,
logs, heartbeat, outputs, stop) stays with the SuperLink, so a simulation run is a run."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from corolla.common.errors import AppError, CorollaError
from corolla.common.protocol import BACKEND_OPTION, check_num_supernodes
from corolla.fab import load_app_config
from corolla.records.context import ConfigScalar, UserConfig
from corolla.serverapp.grid import Grid
from corolla.simulation import ClientAppSource, SimulationGrid

log = logging.getLogger("corolla.serverapp")

WORKERS_READY_TIMEOUT = 120.0  # seconds the first round waits for the workers to load the app


def backend_config(options: Mapping[str, ConfigScalar]) -> dict[str, Any]:
    """The ``options.backend`` table of flat federation options, nested again (``flwr run``
    sends nested tables as dotted keys): ``{"options.backend.client-resources.num-cpus": 2}``
    becomes ``{"client-resources": {"num-cpus": 2}}``. A key that is both a value and a table
    (``options.backend.a = 1`` with ``options.backend.a.b = 2``) is `AppError`."""
    nested: dict[str, Any] = {}
    prefix = BACKEND_OPTION + "."
    for key in sorted(options):  # a key comes before the keys it is a table of
        if not key.startswith(prefix):
            continue
        *tables, name = key[len(prefix) :].split(".")
        table = nested
        for depth, part in enumerate(tables):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                clash = prefix + ".".join(tables[: depth + 1])
                raise AppError(f"federation option {key!r} clashes with {clash!r}")
        table[name] = options[key]
    return nested


@contextlib.contextmanager
def run_grid(
    deployed: Grid,
    *,
    run_id: int,
    federation_options: Mapping[str, ConfigScalar],
    run_config: UserConfig,
    app_dir: Path,
) -> Iterator[Grid]:
    """``deployed``, or for a simulation run a `SimulationGrid` running the app's ClientApp,
    closed (its workers reaped) when the block ends, however it ends (SIGTERM included)."""
    try:
        num_supernodes = check_num_supernodes(federation_options)
    except CorollaError as exc:  # checked at submit already; checked again, not trusted
        raise AppError(str(exc)) from exc
    if num_supernodes is None:
        yield deployed
        return
    try:
        source = ClientAppSource.from_reference(load_app_config(app_dir).clientapp, app_dir)
        grid = SimulationGrid(
            source,
            num_supernodes,
            backend_config=backend_config(federation_options),
            run_id=run_id,
            run_config=run_config,
        )
    except CorollaError as exc:
        raise AppError(f"cannot start the simulation: {exc}") from exc
    with grid:
        grid.set_run(deployed.run)  # what the SuperLink knows: FAB id, version, hash, times
        log.info(
            "run %d: simulating %d virtual SuperNodes on %d worker processes",
            run_id,
            num_supernodes,
            grid.num_workers,
        )
        # Workers start before the first round, not during it (a worker that does not come
        # up is the backend's to report, on the messages it was given).
        grid.wait_ready(WORKERS_READY_TIMEOUT)
        yield grid
