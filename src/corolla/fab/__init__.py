"""FAB (Flower App Bundle): build a deterministic zip of an app, verify and install it."""

from corolla.fab._extract import check_fab_size
from corolla.fab.build import BuiltFab, build_fab, build_fab_bytes, fab_filename
from corolla.fab.config import (
    AppConfig,
    ConfigValue,
    FederationConfig,
    FederationsConfig,
    load_app_config,
    parse_app_config,
)
from corolla.fab.install import InstalledApp, inspect_fab, install_fab, unpack_fab, verify_fab
from corolla.fab.limits import FabLimits

__all__ = [
    "AppConfig",
    "BuiltFab",
    "ConfigValue",
    "FabLimits",
    "FederationConfig",
    "FederationsConfig",
    "InstalledApp",
    "build_fab",
    "build_fab_bytes",
    "check_fab_size",
    "fab_filename",
    "inspect_fab",
    "install_fab",
    "load_app_config",
    "parse_app_config",
    "unpack_fab",
    "verify_fab",
]
