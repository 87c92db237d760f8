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


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, owner-only (0600) from its creation: never readable by
    others, not even for a moment; an existing file is replaced and tightened too."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)  # a file that existed keeps its mode otherwise
        out.write(data)
