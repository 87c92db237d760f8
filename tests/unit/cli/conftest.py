"""Every CLI test gets its own FLWR_HOME and COROLLA_HOME: none reads or writes the
developer's ``~/.flwr`` (user config, tokens) or ``~/.corolla`` (the local SuperLink)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_homes(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    homes = tmp_path_factory.mktemp("homes")
    monkeypatch.setenv("FLWR_HOME", str(homes / "flwr"))
    monkeypatch.setenv("COROLLA_HOME", str(homes / "corolla"))
