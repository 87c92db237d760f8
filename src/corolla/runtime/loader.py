"""Install a run's FAB and load its ServerApp or ClientApp object.

An install is in use from `install` until `unload` (or the process's exit): its lease keeps
garbage collection away from it. After each install, installs no process has used for
``$COROLLA_APPS_MAX_AGE`` seconds (default 7 days) are removed (`corolla.fab.gc`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import TypeVar

from corolla.clientapp.clientapp import short_traceback
from corolla.common.errors import AppError, CorollaError
from corolla.common.paths import apps_root
from corolla.fab import FabLimits, InstalledApp, install_fab
from corolla.fab.gc import collect, max_age_from_env

T = TypeVar("T")

log = logging.getLogger(__name__)

_in_use: dict[str, InstalledApp] = {}  # app directory -> install, until `unload`


def install(fab: bytes, fab_hash: str, root: Path | None = None) -> Path:
    """Verify the FAB against ``fab_hash`` (the hash the run names) and install it (once per
    hash; an existing install is used only if it is exactly this FAB); returns the app
    directory. Limits: ``COROLLA_MAX_FAB_*`` in the environment, else the defaults."""
    root = root or apps_root()
    try:
        installed = install_fab(fab, fab_hash, root, limits=FabLimits.from_env(os.environ))
    except CorollaError as exc:
        raise AppError(f"cannot install the app bundle: {exc}") from exc
    key = str(installed.path)
    if key in _in_use:
        installed.release()  # this process holds it already
    else:
        _in_use[key] = installed
    _collect_garbage(root, installed.fab_hash)
    return installed.path


def _collect_garbage(root: Path, keep: str) -> None:
    """Remove old unused installs; a problem here is logged, never fails the run."""
    try:
        collect(root, max_age=max_age_from_env(os.environ), keep={keep})
    except (OSError, CorollaError) as exc:
        log.warning("cannot remove old app installs from %s: %s", root, exc)


def load_component(app_dir: Path, reference: str, expected: type[T]) -> T:
    """Import ``module:attribute`` from ``app_dir`` and check it is an ``expected`` instance."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise AppError(f"invalid component reference {reference!r} (expected 'module:attribute')")
    path = str(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AppError(f"app import error in {module_name!r}:\n{short_traceback(exc)}") from exc
    obj = getattr(module, attribute, None)
    if obj is None:
        raise AppError(f"app import error: {module_name!r} has no attribute {attribute!r}")
    if not isinstance(obj, expected):
        raise AppError(
            f"{reference} is a {type(obj).__name__}, expected a {expected.__name__} instance"
        )
    return obj


def unload(app_dir: Path) -> None:
    """Forget an app's modules and path, so the next run imports its own app afresh; the
    install is no longer in use by this process."""
    root = str(app_dir)
    installed = _in_use.pop(root, None)
    if installed is not None:
        installed.release()
    while root in sys.path:
        sys.path.remove(root)
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None) or ""
        if origin.startswith(root + "/") or origin == root:
            del sys.modules[name]
    importlib.invalidate_caches()
