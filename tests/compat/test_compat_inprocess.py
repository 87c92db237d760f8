"""Every compat app (one per feature group of Flower's Message API) runs to its end in-process.

An app checks its own expectations in its ServerApp, which raises if one does not hold; a run
that ends without raising and prints the app's success line has passed them all.
"""

from __future__ import annotations

import pytest
from compat_helpers import APPS, run_inprocess, success_line

pytestmark = pytest.mark.timeout(60)

APP_NAMES = sorted(path.parent.name for path in APPS.glob("*/pyproject.toml"))


def test_there_is_an_app_per_feature_group() -> None:
    assert APP_NAMES == ["common", "dp", "grid", "mods", "records", "strategies"]


@pytest.mark.parametrize("name", APP_NAMES)
def test_the_app_completes_in_process(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_inprocess(name)
    out = capsys.readouterr().out
    assert success_line(name).search(out), out


def test_an_expectation_that_does_not_hold_fails_the_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # compat-common expects the run config's train.lr to be 0.5; with 0.25 its check fails.
    with pytest.raises(AssertionError, match=r"'lr': 0\.25"):
        run_inprocess("common", overrides={"train.lr": 0.25})
    assert not success_line("common").search(capsys.readouterr().out)
