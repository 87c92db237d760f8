"""Install a run's FAB and load its ServerApp or ClientApp object."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TypeVar

from corolla.clientapp.clientapp import short_traceback
from corolla.common.errors import AppError, CorollaError
from corolla.common.paths import apps_root
from corolla.fab import install_fab

T = TypeVar("T")


def install(fab: bytes, fab_hash: str, root: Path | None = None) -> Path:
    """Verify and unpack the FAB (once per hash); returns the app directory."""
    try:
        return install_fab(fab, fab_hash, root or apps_root()).path
    except CorollaError as exc:
        raise AppError(f"cannot install the app bundle: {exc}") from exc


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
    """Forget an app's modules and path, so the next run imports its own app afresh."""
    root = str(app_dir)
    while root in sys.path:
        sys.path.remove(root)
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None) or ""
        if origin.startswith(root + "/") or origin == root:
            del sys.modules[name]
    importlib.invalidate_caches()
