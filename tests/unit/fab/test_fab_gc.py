"""Garbage collection of installs: old and unused go; in use, recent or kept ones stay."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from corolla.common.errors import InvalidArgument
from corolla.fab import InstalledApp, build_fab, install_fab
from corolla.fab._lease import LOCK_PATH
from corolla.fab.gc import DEFAULT_MAX_AGE, STALE_TEMP_AGE, collect, max_age_from_env
from corolla.runtime.loader import install, unload

DAY = 24 * 3600.0
NOW = 1_900_000_000.0
PYPROJECT = """
[project]
name = "app{n}"
version = "1.0.0"

[tool.flwr.app]
publisher = "acme"

[tool.flwr.app.components]
serverapp = "pkg.server_app:app"
clientapp = "pkg.server_app:app"
"""


def make_fab(tmp: Path, n: int) -> tuple[bytes, str]:
    src = tmp / f"src{n}"
    (src / "pkg").mkdir(parents=True)
    (src / "pyproject.toml").write_text(PYPROJECT.format(n=n))
    (src / "pkg" / "server_app.py").write_text(f"app = {n}\n")
    built = build_fab(src)
    return built.data, built.fab_hash


def installed(tmp: Path, root: Path, n: int, *, last_used: float) -> InstalledApp:
    data, fab_hash = make_fab(tmp, n)
    app = install_fab(data, fab_hash, root)
    os.utime(app.path / LOCK_PATH, (last_used, last_used))
    return app


def test_old_unused_installs_go_and_the_others_stay(tmp_path: Path) -> None:
    root = tmp_path / "apps"
    old = installed(tmp_path, root, 1, last_used=NOW - 8 * DAY)
    recent = installed(tmp_path, root, 2, last_used=NOW - 6 * DAY)
    in_use = installed(tmp_path, root, 3, last_used=NOW - 30 * DAY)
    kept = installed(tmp_path, root, 4, last_used=NOW - 30 * DAY)
    for app in (old, recent, kept):
        app.release()  # in_use keeps its lease, as a running app process does
    removed = collect(root, max_age=7 * DAY, keep={kept.fab_hash}, now=NOW)
    assert removed == [old.fab_hash]
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [recent.fab_hash, in_use.fab_hash, kept.fab_hash]
    )
    in_use.release()
    assert collect(root, max_age=7 * DAY, keep={kept.fab_hash}, now=NOW) == [in_use.fab_hash]


def test_leftovers_and_foreign_directories(tmp_path: Path) -> None:
    root = tmp_path / "apps"
    stale_partial = root / f".{'a' * 64}.x1.partial"
    fresh_partial = root / f".{'b' * 64}.x2.partial"
    stale_removal = root / f".{'c' * 64}.x3.stale"
    no_lock = root / ("d" * 64)  # a directory that is no install of ours
    other = root / "README"
    for path in (stale_partial, fresh_partial, stale_removal, no_lock):
        (path / "pkg").mkdir(parents=True)
        (path / "pkg" / "m.py").write_text("")
    other.write_text("not ours")
    for path in (stale_partial, stale_removal, no_lock, other):
        os.utime(path, (NOW - 2 * STALE_TEMP_AGE - DEFAULT_MAX_AGE,) * 2)
    os.utime(fresh_partial, (NOW - 60, NOW - 60))
    assert collect(root, max_age=DEFAULT_MAX_AGE, now=NOW) == ["d" * 64]
    assert sorted(p.name for p in root.iterdir()) == sorted([fresh_partial.name, "README"])


def test_a_missing_apps_directory_is_nothing_to_do(tmp_path: Path) -> None:
    assert collect(tmp_path / "absent", max_age=1.0) == []


def test_max_age_from_the_environment() -> None:
    assert max_age_from_env({}) == DEFAULT_MAX_AGE == 7 * DAY
    assert max_age_from_env({"COROLLA_APPS_MAX_AGE": "3600"}) == 3600.0
    for bad in ("0", "-1", "soon", "nan"):
        with pytest.raises(InvalidArgument, match="COROLLA_APPS_MAX_AGE"):
            max_age_from_env({"COROLLA_APPS_MAX_AGE": bad})


def test_the_loader_collects_after_each_install_and_unload_ends_the_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "apps"
    monkeypatch.setenv("COROLLA_APPS_MAX_AGE", "3600")
    first_data, first_hash = make_fab(tmp_path, 1)
    second_data, second_hash = make_fab(tmp_path, 2)
    first = install(first_data, first_hash, root)
    long_ago = time.time() - 2 * 3600
    os.utime(first / LOCK_PATH, (long_ago, long_ago))
    second = install(second_data, second_hash, root)
    assert first.exists(), "in use by this process until unload"
    unload(first)
    install(second_data, second_hash, root)  # the next install collects it
    assert sorted(p.name for p in root.iterdir()) == [second_hash]
    unload(second)
    monkeypatch.setenv("COROLLA_APPS_MAX_AGE", "soon")
    with caplog.at_level(logging.WARNING, logger="corolla.runtime.loader"):
        assert install(second_data, second_hash, root) == second  # GC skipped, install done
    assert "COROLLA_APPS_MAX_AGE" in caplog.text
    unload(second)
