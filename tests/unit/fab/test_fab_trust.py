"""An install is trusted only if it is exactly its FAB: marker, every file's hash, nothing more."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import itertools
import json
import os
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corolla.common.errors import AppError, InvalidArgument
from corolla.fab import _lease as lease_module
from corolla.fab import build_fab, install_fab
from corolla.fab._lease import LOCK_PATH, lock_shared
from corolla.fab._tree import MARKER_PATH
from corolla.runtime.loader import install, load_component, unload

PYPROJECT = """
[project]
name = "demo"
version = "1.0.0"

[tool.flwr.app]
publisher = "acme"

[tool.flwr.app.components]
serverapp = "{module}.server_app:app"
clientapp = "{module}.server_app:app"
"""
GENUINE = "app = 'genuine'\n# " + "padding " * 50 + "\n"
_names = itertools.count()


class Fab:
    def __init__(self, tmp: Path) -> None:
        self.module = f"trustpkg{next(_names)}"
        src = tmp / "src"
        (src / self.module).mkdir(parents=True)
        (src / "pyproject.toml").write_text(PYPROJECT.format(module=self.module))
        (src / self.module / "__init__.py").write_text("")
        (src / self.module / "server_app.py").write_text(GENUINE)
        built = build_fab(src)
        self.data, self.hash = built.data, built.fab_hash
        self.root = tmp / "home" / "apps"
        self.dest = self.root / self.hash
        self.canary = tmp / "pwned"

    @property
    def reference(self) -> str:
        return f"{self.module}.server_app:app"

    @property
    def evil(self) -> str:
        """Module code that leaves a file behind if it ever runs, as long as the genuine one
        (a check of sizes alone would not see the difference)."""
        code = f"import pathlib\npathlib.Path({str(self.canary)!r}).write_text('x')\napp = 'evil'\n"
        return code + "#" * (len(GENUINE) - len(code) - 1) + "\n"

    def load(self) -> Any:
        app_dir = install(self.data, self.hash, self.root)
        try:
            return load_component(app_dir, self.reference, str)
        finally:
            unload(app_dir)


@pytest.fixture
def fab(tmp_path: Path) -> Iterator[Fab]:
    made = Fab(tmp_path)
    yield made
    for name in [m for m in sys.modules if m.startswith(made.module)]:
        del sys.modules[name]


def test_a_pre_created_directory_is_not_trusted(fab: Fab) -> None:
    assert len(fab.evil) == len(GENUINE)
    module = fab.dest / fab.module
    module.mkdir(parents=True)
    (fab.dest / "pyproject.toml").write_text(PYPROJECT.format(module=fab.module))
    (module / "__init__.py").write_text("")
    (module / "server_app.py").write_text(fab.evil)
    (fab.dest / ".corolla").mkdir()  # even with a manifest that matches every size
    (fab.dest / ".corolla" / "manifest.json").write_bytes(_manifest_of(fab))
    assert fab.load() == "genuine"
    assert not fab.canary.exists()


def test_a_changed_module_is_replaced(fab: Fab) -> None:
    install_fab(fab.data, fab.hash, fab.root).release()
    (fab.dest / fab.module / "server_app.py").write_text(fab.evil)
    assert fab.load() == "genuine"
    assert not fab.canary.exists()


@pytest.mark.parametrize(
    "tamper",
    ["planted module", "planted .pth", "symlink", "removed marker", "foreign marker", "empty"],
)
def test_any_tampering_means_a_fresh_install(fab: Fab, tamper: str) -> None:
    install_fab(fab.data, fab.hash, fab.root).release()
    os.utime(fab.dest / fab.module / "server_app.py", (1, 1))  # a fresh install has "now"
    if tamper == "planted module":
        (fab.dest / fab.module / "evil.py").write_text(fab.evil)
    elif tamper == "planted .pth":
        (fab.dest / "evil.pth").write_text("import os\n")
    elif tamper == "symlink":
        (fab.dest / fab.module / "linked.py").symlink_to("/etc/hostname")
    elif tamper == "removed marker":
        (fab.dest / MARKER_PATH).unlink()
    elif tamper == "foreign marker":
        marker = json.loads((fab.dest / MARKER_PATH).read_text())
        (fab.dest / MARKER_PATH).write_text(json.dumps({**marker, "fab_hash": "0" * 64}))
    elif tamper == "empty":
        shutil.rmtree(fab.dest)
        fab.dest.mkdir()
    again = install_fab(fab.data, fab.hash, fab.root)
    again.release()
    assert (fab.dest / fab.module / "server_app.py").read_text() == GENUINE
    assert (fab.dest / fab.module / "server_app.py").stat().st_mtime > 1
    assert sorted(p.name for p in (fab.dest / fab.module).iterdir()) == [
        "__init__.py",
        "server_app.py",
    ]
    assert not (fab.dest / "evil.pth").exists()
    assert [p.name for p in fab.root.iterdir()] == [fab.hash]  # nothing left aside


def test_an_intact_install_is_reused(fab: Fab) -> None:
    install_fab(fab.data, fab.hash, fab.root).release()
    os.utime(fab.dest / fab.module / "server_app.py", (1, 1))
    install_fab(fab.data, fab.hash, fab.root).release()
    assert (fab.dest / fab.module / "server_app.py").stat().st_mtime == 1


def test_a_planted_bytecode_file_never_runs(fab: Fab) -> None:
    """A .pyc with the source's mtime and size would be imported instead of the source."""
    install_fab(fab.data, fab.hash, fab.root).release()
    source = fab.dest / fab.module / "server_app.py"
    cached = Path(importlib.util.cache_from_source(str(source)))
    cached.parent.mkdir(exist_ok=True)
    code = compile(fab.evil, str(source), "exec")
    info = source.stat()
    from importlib._bootstrap_external import _code_to_timestamp_pyc  # type: ignore[attr-defined]

    cached.write_bytes(bytes(_code_to_timestamp_pyc(code, int(info.st_mtime), info.st_size)))
    assert fab.load() == "genuine"
    assert not fab.canary.exists()


def test_the_fab_must_hash_to_the_hash_the_run_names(fab: Fab) -> None:
    other = hashlib.sha256(b"another app").hexdigest()
    with pytest.raises(AppError, match="hash mismatch"):
        install(fab.data, other, fab.root)
    assert not (fab.root / other).exists()


def test_the_apps_directory_is_private(fab: Fab) -> None:
    fab.root.mkdir(parents=True, mode=0o755)
    os.chmod(fab.root, 0o755)
    install_fab(fab.data, fab.hash, fab.root).release()
    assert stat.S_IMODE(fab.root.stat().st_mode) == 0o700


def test_a_lease_on_an_install_moved_away_meanwhile_is_refused(
    fab: Fab, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fab(fab.data, fab.hash, fab.root).release()
    real_flock = fcntl.flock

    def flock_after_a_removal(fd: int, operation: int) -> None:
        os.rename(fab.dest, fab.root / "moved")  # between our open and our lock
        monkeypatch.setattr(lease_module.fcntl, "flock", real_flock)
        real_flock(fd, operation)

    monkeypatch.setattr(lease_module.fcntl, "flock", flock_after_a_removal)
    assert lock_shared(fab.dest) is None
    again = install_fab(fab.data, fab.hash, fab.root)  # installs afresh
    assert again.lease is not None and again.lease.held
    again.release()
    assert not again.lease.held


def test_reserved_and_cache_paths_cannot_come_from_a_fab(tmp_path: Path) -> None:
    from test_fab_install import craft  # the hostile-archive builder of the sibling module

    for name in (LOCK_PATH, MARKER_PATH, "pkg/__pycache__/x.pyc", ".COROLLA/lock"):
        data = craft([(name, b"x")])
        with pytest.raises(InvalidArgument, match=r"reserved|__pycache__"):
            install_fab(data, hashlib.sha256(data).hexdigest(), tmp_path / "apps")


def _manifest_of(fab: Fab) -> bytes:
    from corolla.fab._extract import read_manifest

    return read_manifest(fab.data)
