"""Where Corolla keeps its files: ``$COROLLA_HOME`` or ``~/.corolla``."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "COROLLA_HOME"


def corolla_home() -> Path:
    configured = os.environ.get(HOME_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".corolla"


def apps_root() -> Path:
    """Installed FABs, one directory per FAB hash."""
    return corolla_home() / "apps"
