"""`run_simulation`: run a ServerApp against virtual SuperNodes on this machine."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from corolla.clientapp import ClientApp
from corolla.common.errors import InvalidArgument
from corolla.common.protocol import SERVER_NODE_ID
from corolla.records import Context, UserConfig
from corolla.records.serde import context_from_proto, context_to_proto
from corolla.serverapp.serverapp import ServerApp
from corolla.simulation.backend import ClientAppSource
from corolla.simulation.grid import SimulationGrid

log = logging.getLogger(__name__)

WORKERS_READY_TIMEOUT = 120.0  # seconds to wait for the workers to load the ClientApp


def run_simulation(
    server_app: ServerApp,
    client_app: ClientApp | ClientAppSource,
    num_supernodes: int,
    backend_name: str = "local",
    backend_config: Mapping[str, Any] | None = None,
    enable_tf_gpu_growth: bool = False,
    verbose_logging: bool = False,
    *,
    run_config: UserConfig | None = None,
    node_configs: Mapping[int, UserConfig] | None = None,
    run_id: int = 1,
) -> Context:
    """Run ``server_app`` with a `SimulationGrid` of ``num_supernodes`` virtual SuperNodes, all
    running ``client_app``; return the ServerApp's context when its main returns.

    The ServerApp is called as in a deployment: ``server_app(grid, context)`` with a context
    of node `SERVER_NODE_ID` holding ``run_config`` (passed through the wire encoding, so it
    holds only what can travel). An exception of the ServerApp (e.g. `RoundFailed`) propagates
    unchanged, after every worker process has been reaped.

    ``client_app`` runs in worker processes (fresh interpreters with this process's
    ``sys.path``), which import it by the module-level name it is bound to (a `ClientApp`
    created at the top of a module, or of the script that calls this function: a script's
    ``if __name__ == "__main__":`` part does not run in the workers). Or pass
    ``ClientAppSource.from_reference("module:attr", app_dir)``.

    ``backend_name`` is ``"local"`` (the built-in pool of worker processes, nothing to
    install) or ``"ray"`` (the ``corolla[simulation]`` extra); a ``name`` in
    ``backend_config`` wins. ``backend_config`` is Flower's (``{"client-resources":
    {"num-cpus": 1, "num-gpus": 0}, "init-args": {...}}``, plus ``num-workers``), see
    `BackendConfig.parse`; node configs as in `SimulationGrid`. ``enable_tf_gpu_growth`` sets
    ``TF_FORCE_GPU_ALLOW_GROWTH`` for the workers (TensorFlow then takes GPU memory as it needs
    it); ``verbose_logging`` logs this module at DEBUG.
    """
    if not isinstance(backend_name, str):
        raise InvalidArgument(
            f"backend_name must be 'local' or 'ray', not {type(backend_name).__name__}; "
            "pass the backend's settings as backend_config="
        )
    backend_config = {"name": backend_name, **(backend_config or {})}
    if enable_tf_gpu_growth:
        os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"  # workers inherit the environment
    if verbose_logging:
        log.setLevel(logging.DEBUG)
    context = Context(run_id=run_id, node_id=SERVER_NODE_ID, run_config=dict(run_config or {}))
    context = context_from_proto(context_to_proto(context))
    started = time.monotonic()
    with SimulationGrid(
        client_app,
        num_supernodes,
        backend_config=backend_config,
        run_id=run_id,
        run_config=run_config,
        node_configs=node_configs,
    ) as grid:
        log.info(
            "simulation: %d virtual SuperNodes on %d %s workers",
            num_supernodes,
            grid.num_workers,
            backend_config["name"],
        )
        grid.wait_ready(WORKERS_READY_TIMEOUT)  # the first round does not pay for the start
        server_app(grid, context)
    log.info("simulation finished in %.2f s", time.monotonic() - started)
    return context
