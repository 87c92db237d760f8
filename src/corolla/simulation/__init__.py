"""Run apps without a deployed federation.

- `run_simulation`: a ServerApp against virtual SuperNodes on this machine's worker processes;
- `SimulationGrid`: the `Grid` it uses (virtual nodes, per-node contexts, TTLs);
- `InProcessGrid`: ClientApps called in this process (tests, quick trials).
"""

from corolla.simulation.backend import ClientAppSource
from corolla.simulation.grid import SimulationGrid
from corolla.simulation.inprocess import InProcessGrid
from corolla.simulation.run import run_simulation

__all__ = [
    "ClientAppSource",
    "InProcessGrid",
    "SimulationGrid",
    "run_simulation",
]
