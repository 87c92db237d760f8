"""`flwr build`: write the app's FAB into the current directory."""

from __future__ import annotations

import os
from pathlib import Path

from corolla.cli.commands._shared import AppDir
from corolla.fab import build_fab


def build(app_dir: AppDir = Path(".")) -> None:
    """Build the app in APP_DIR into a FAB file in the current directory."""
    cwd = Path.cwd()
    fab = build_fab(app_dir, out_dir=cwd)
    written = fab.path if fab.path is not None else cwd
    shown = os.path.relpath(written, cwd) if written.is_relative_to(cwd) else str(written)
    print(f"Built {shown} ({len(fab.data):,} bytes)")
    print(f"sha256 {fab.fab_hash}")
