"""Helpers of the compat suite: the apps under ``apps/``, run in-process or on a federation."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corolla.clientapp import ClientApp
from corolla.common.protocol import SERVER_NODE_ID
from corolla.deploy.local import LocalFederation
from corolla.fab.config import load_app_config
from corolla.records import Context, UserConfig
from corolla.runtime.loader import load_component, unload
from corolla.serverapp import ServerApp
from corolla.simulation import InProcessGrid

APPS = Path(__file__).parent / "apps"
FLWR = Path(sys.executable).parent / "flwr"
NUM_NODES = 3  # every app waits for this many nodes (its run config's num-nodes)


def success_line(name: str) -> re.Pattern[str]:
    """The line an app's ServerApp prints once all its checks held."""
    return re.compile(rf"^compat-{name}: PASS\b.*$", re.MULTILINE)


def run_inprocess(
    name: str, num_nodes: int = NUM_NODES, overrides: UserConfig | None = None
) -> InProcessGrid:
    """Run app ``name`` (its run config updated with ``overrides``) to its end on an
    `InProcessGrid` of ``num_nodes`` nodes whose node configs are a deployment's
    (``partition-id``, ``num-partitions``); returns the grid. What the ServerApp raises
    propagates."""
    app_dir = APPS / name
    config = load_app_config(app_dir)
    run_config: UserConfig = {**config.run_config, **(overrides or {})}
    try:
        client = load_component(app_dir, config.clientapp, ClientApp)
        server = load_component(app_dir, config.serverapp, ServerApp)
        grid = InProcessGrid(
            client,
            num_nodes,
            run_config=run_config,
            node_configs={
                node: {"partition-id": node - 1, "num-partitions": num_nodes}
                for node in range(1, num_nodes + 1)
            },
        )
        server(grid, Context(run_id=grid.run_id, node_id=SERVER_NODE_ID, run_config=run_config))
    finally:
        unload(app_dir)
    return grid


@dataclass
class FederatedRun:
    run_id: int
    info: dict[str, Any]  # the run's `flwr ls` row
    log: str  # `flwr log --follow` output


class Flwr:
    """The ``flwr`` CLI as a user runs it, against one federation."""

    def __init__(self, federation: LocalFederation) -> None:
        self.federation = federation

    def __call__(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FLWR), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.federation.env,
            check=False,
        )

    def submit(self, app: Path, config: str = "") -> int:
        """``flwr run`` (not streaming), with ``--run-config config`` if given; the run's id."""
        result = self("run", str(app), "local", *(["--run-config", config] if config else []))
        assert result.returncode == 0, result.stdout + result.stderr
        match = re.search(r"Started run (\d+)", result.stdout)
        assert match, result.stdout
        return int(match.group(1))

    def finish(self, app: Path, run_id: int) -> FederatedRun:
        """Follow the run's log until it ends, then read its ``flwr ls`` row."""
        followed = self("log", str(run_id), str(app), "local", "--follow")
        listed = self("ls", str(app), "local", "--run-id", str(run_id), "--format", "json")
        assert listed.returncode == 0, listed.stderr
        data = json.loads(listed.stdout)
        rows = data if isinstance(data, list) else data["runs"]
        return FederatedRun(run_id, dict(rows[0]), followed.stdout + followed.stderr)
