"""Compat apps run on a real local federation (a SuperLink and SuperNodes as processes on
loopback), submitted with ``flwr run`` and followed with ``flwr log`` as a user does.

Each app checks its own expectations in its ServerApp: the run completes only if they all
hold, and the ServerApp's success line is in the run's log.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from compat_helpers import APPS, Flwr, success_line

from corolla.deploy.local import LocalFederation, app_for_federation

pytestmark = pytest.mark.timeout(120)

FEDERATED = ["records", "common", "strategies", "mods", "dp", "grid"]


def federated_app(name: str, federation: LocalFederation, dest: Path) -> Path:
    """A copy of app ``name`` in ``dest`` whose federation ``local`` is ``federation``."""
    settings = federation.federation_settings()
    return app_for_federation(APPS / name, dest / name, federation.exec, settings=settings)


@pytest.mark.parametrize("name", FEDERATED)
def test_the_app_completes_on_a_federation(
    name: str, federation: LocalFederation, tmp_path: Path
) -> None:
    app = federated_app(name, federation, tmp_path)
    flwr = Flwr(federation)
    run = flwr.finish(app, flwr.submit(app))
    assert (run.info["status"], run.info["sub_status"]) == ("finished", "completed"), (
        run.info,
        run.log,
    )
    assert success_line(name).search(run.log), run.log


def test_an_expectation_that_does_not_hold_fails_the_federated_run(
    federation: LocalFederation, tmp_path: Path
) -> None:
    app = federated_app("common", federation, tmp_path)
    flwr = Flwr(federation)
    run = flwr.finish(app, flwr.submit(app, config="train.lr=0.25"))  # compat-common wants 0.5
    assert (run.info["status"], run.info["sub_status"]) == ("finished", "failed"), run.info
    assert "AssertionError" in str(run.info["details"]), run.info
    assert not success_line("common").search(run.log), run.log
