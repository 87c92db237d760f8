"""How a run's ServerApp gets its grid: the federation options decide, and the backend table
comes back nested from the flat options `flwr run` sends."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corolla.clientapp import ClientApp
from corolla.common.errors import AppError
from corolla.records.context import UserConfig
from corolla.runtime.simulated import backend_config, run_grid
from corolla.simulation import InProcessGrid, SimulationGrid

BAD_NUM = re.escape("'options.num-supernodes' must be an integer")

pytestmark = pytest.mark.timeout(30)


def test_the_backend_table_is_nested_again_and_other_options_are_left_out() -> None:
    options: UserConfig = {
        "options.num-supernodes": 4,
        "options.backend.name": "local",
        "options.backend.client-resources.num-cpus": 2,
        "options.backend.client-resources.num-gpus": 0.5,
        "options.backend.init-args.log-to-driver": False,
        "options.backendish": 1,
        "root-certificates": "ca.pem",
    }
    assert backend_config(options) == {
        "name": "local",
        "client-resources": {"num-cpus": 2, "num-gpus": 0.5},
        "init-args": {"log-to-driver": False},
    }
    assert backend_config({"options.num-supernodes": 4}) == {}


def test_a_key_that_is_both_a_value_and_a_table_is_refused() -> None:
    options = {"options.backend.client-resources": 1, "options.backend.client-resources.x": 2}
    clash = re.escape("clashes with 'options.backend.client-resources'")
    with pytest.raises(AppError, match=clash):
        backend_config(options)


_KEY = st.text(alphabet="abcxyz-", min_size=1, max_size=4)


@given(
    st.dictionaries(
        st.lists(_KEY, min_size=1, max_size=3).map(".".join),
        st.integers() | st.booleans() | st.text(max_size=5),
        max_size=8,
    )
)
def test_nesting_inverts_flattening(flat: dict[str, int | bool | str]) -> None:
    keys = sorted(flat)
    if any(b.startswith(a + ".") for a in keys for b in keys):
        return  # a value and a table at once: refused, tested above
    nested = backend_config({f"options.backend.{key}": value for key, value in flat.items()})

    def flatten(table: dict[str, object], prefix: str = "") -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in table.items():
            if isinstance(value, dict):
                out.update(flatten(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    assert flatten(nested) == flat


def test_a_run_without_num_supernodes_keeps_the_deployed_grid(tmp_path: Path) -> None:
    deployed = InProcessGrid(ClientApp(), 1)
    options = {"options.backend.name": "local"}
    with run_grid(
        deployed, run_id=1, federation_options=options, run_config={}, app_dir=tmp_path
    ) as grid:
        assert grid is deployed


@pytest.mark.parametrize("num", [0, -1, 100_001, "3", True, 2.0])
def test_a_bad_num_supernodes_fails_the_run(tmp_path: Path, num: object) -> None:
    options = {"options.num-supernodes": num}
    with (
        pytest.raises(AppError, match=BAD_NUM),
        run_grid(
            InProcessGrid(ClientApp(), 1),
            run_id=1,
            federation_options=options,  # type: ignore[arg-type]  # a bad value on purpose
            run_config={},
            app_dir=tmp_path,
        ),
    ):
        pass


SIMAPP = Path(__file__).parents[2] / "integration" / "apps" / "simapp"


def test_a_bad_backend_fails_the_run_with_the_reason() -> None:
    options: UserConfig = {"options.num-supernodes": 2, "options.backend.name": "nope"}
    with (
        pytest.raises(AppError, match="cannot start the simulation: unknown simulation backend"),
        run_grid(
            InProcessGrid(ClientApp(), 1),
            run_id=1,
            federation_options=options,
            run_config={},
            app_dir=SIMAPP,
        ),
    ):
        pass


def test_a_simulation_run_gets_a_simulation_grid_whose_workers_end_with_the_block() -> None:
    options = {"options.num-supernodes": 3, "options.backend.num-workers": 1}
    deployed = InProcessGrid(ClientApp(), 1, run_id=5)
    deployed.set_run(dataclasses.replace(deployed.run, fab_id="corolla/simapp", fab_hash="ab12"))
    with run_grid(
        deployed,
        run_id=5,
        federation_options=options,
        run_config={"seed": 1},
        app_dir=SIMAPP,
    ) as grid:
        assert isinstance(grid, SimulationGrid)
        assert (grid.run_id, grid.get_node_ids(), grid.num_workers) == (5, [1, 2, 3], 1)
        assert (grid.run.fab_id, grid.run.fab_hash) == ("corolla/simapp", "ab12")  # deployed's
        workers = grid.worker_pids()
    assert workers and not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_sigterm_in_the_app_still_reaps_the_workers() -> None:
    # flwr-serverapp turns SIGTERM (flwr stop) into SystemExit in the main thread.
    options = {"options.num-supernodes": 2, "options.backend.num-workers": 2}
    workers: list[int] = []
    with (
        pytest.raises(SystemExit),
        run_grid(
            InProcessGrid(ClientApp(), 1),
            run_id=1,
            federation_options=options,
            run_config={},
            app_dir=SIMAPP,
        ) as grid,
    ):
        assert isinstance(grid, SimulationGrid)
        workers = grid.worker_pids()
        raise SystemExit(143)
    assert len(workers) == 2 and not any(Path(f"/proc/{pid}").exists() for pid in workers)
