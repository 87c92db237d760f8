"""The user's own federations: named SuperLink connections in ``$FLWR_HOME/config.toml``.

They let `flwr` reach a SuperLink from an app that defines no ``[tool.flwr.federations]``, or
from outside any app. The file is optional and never created here::

    [superlink]
    default = "prod"                      # optional; else the built-in "local-simulation"

    [superlink.prod]
    address = "superlink.example.org:9093"
    root-certificates = "certs/ca.pem"    # relative to this file's directory

    [superlink.sim]
    options.num-supernodes = 10

This module only reads and type-checks the file; `corolla.cli.config` turns an entry into a
`Federation` with the same rules as a pyproject federation (docs/federations.md).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corolla.cli.credentials import HOME_ENV
from corolla.common.errors import InvalidArgument
from corolla.fab import FederationConfig

USER_CONFIG_FILE = "config.toml"
LOCAL_SIMULATION = "local-simulation"
"""The federation that always exists unless the app or the user config defines its own."""

_TABLE = "superlink"
_PATH_KEYS = ("root-certificates", "client-certificate", "client-key")
_KNOWN_KEYS = ("address", "insecure", "options", *_PATH_KEYS)


@dataclass(frozen=True)
class UserConfig:
    """The ``[superlink]`` table of the user config (empty when the file does not exist)."""

    path: Path
    exists: bool
    default: str | None = None
    federations: dict[str, FederationConfig] = field(default_factory=dict)

    @property
    def default_name(self) -> str:
        """The federation to use when none is named: ``default``, else ``local-simulation``."""
        return self.default or LOCAL_SIMULATION


def user_config_path() -> Path:
    """``$FLWR_HOME/config.toml``; without ``FLWR_HOME``, ``~/.flwr/config.toml``."""
    home = os.environ.get(HOME_ENV)
    base = Path(home).expanduser() if home else Path.home() / ".flwr"
    return base / USER_CONFIG_FILE


def load_user_config(path: Path | None = None) -> UserConfig:
    """Read and type-check the user config at ``path`` (default: `user_config_path()`)."""
    path = user_config_path() if path is None else path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return UserConfig(path=path, exists=False)
    except OSError as exc:
        raise InvalidArgument(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{path}: not valid UTF-8") from exc
    return parse_user_config(text, path=path)


def parse_user_config(text: str, *, path: Path) -> UserConfig:
    """Validate user-config content; ``path`` names the file in messages (one line each)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"{path}: invalid TOML: {_one_line(exc)}") from exc
    for key in doc:
        if key != _TABLE:
            raise InvalidArgument(f"{path}: unknown key {key!r} (only [{_TABLE}] is read)")
    table = doc.get(_TABLE, {})
    if not isinstance(table, dict):
        raise InvalidArgument(f"{path}: '{_TABLE}' must be a table")
    default = table.get("default")
    if default is not None and (not isinstance(default, str) or not default):
        raise InvalidArgument(f"{path}: '{_TABLE}.default' must be a non-empty string")
    feds: dict[str, FederationConfig] = {}
    for name, value in table.items():
        if name == "default":
            continue
        if not isinstance(value, dict):
            raise InvalidArgument(
                f"{path}: unknown key '{_TABLE}.{name}' (a connection is a table "
                f"[{_TABLE}.{name}]; the only other key is 'default')"
            )
        feds[name] = _federation(path, name, value)
    if default is not None and default not in feds and default != LOCAL_SIMULATION:
        known = ", ".join(sorted(feds)) or "none"
        raise InvalidArgument(
            f"{path}: '{_TABLE}.default' names unknown federation {default!r} "
            f"(defined here: {known}; built in: {LOCAL_SIMULATION})"
        )
    return UserConfig(path=path, exists=True, default=default, federations=feds)


def _federation(path: Path, name: str, table: dict[str, Any]) -> FederationConfig:
    """The entry as a `FederationConfig` shaped like a pyproject one (checked types only)."""
    where = f"{path}: '{_TABLE}.{name}"
    for key in table:
        if key not in _KNOWN_KEYS:
            known = ", ".join(sorted(_KNOWN_KEYS))
            raise InvalidArgument(f"{where}.{key}' is an unknown key (known: {known})")
    options = dict(table)
    address = options.pop("address", None)
    if address is not None and (not isinstance(address, str) or not address):
        raise InvalidArgument(f"{where}.address' must be a non-empty string")
    insecure = options.pop("insecure", False)
    if not isinstance(insecure, bool):
        raise InvalidArgument(f"{where}.insecure' must be true or false")
    for key in _PATH_KEYS:
        value = options.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidArgument(f"{where}.{key}' must be a file path (a non-empty string)")
    if not isinstance(options.get("options", {}), dict):
        raise InvalidArgument(f"{where}.options' must be a table")
    return FederationConfig(name=name, address=address, insecure=insecure, options=options)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
