"""Arguments several commands take, and opening the Exec API of the chosen federation.

A deployed federation is reached at its ``address``. A simulation federation (no address) is
reached at the local SuperLink `flwr` manages (`corolla.cli.localsuperlink`): `flwr run` starts
it if needed; the other commands use it only if it is running (`NoLocalSuperLink` otherwise).
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from corolla.cli.auth import TokenSession
from corolla.cli.config import Federation, resolve_federation, resolve_user_federation
from corolla.cli.credentials import credentials_path, not_logged_in_message
from corolla.cli.exec_client import ExecClient
from corolla.cli.localsuperlink import (
    IDLE_TIMEOUT,
    ensure_local_superlink,
    local_superlink_dir,
    running_local_superlink,
)
from corolla.common.errors import InvalidArgument, NotFound
from corolla.common.net import is_loopback_address
from corolla.fab import load_app_config
from corolla.fab.config import PYPROJECT

AppDir = Annotated[
    Path,
    typer.Argument(
        metavar="APP_DIR",
        help="App directory (the one holding pyproject.toml). If no such directory exists "
        "and no FEDERATION is given, it is taken as the FEDERATION (`flwr ls prod`).",
    ),
]
FederationName = Annotated[
    str | None,
    typer.Argument(
        metavar="FEDERATION",
        help="Federation from the app's [tool.flwr.federations], else the user config "
        "($FLWR_HOME/config.toml), else the built-in 'local-simulation' (default: the app's "
        "'default', else the user config's, else 'local-simulation').",
        show_default=False,
    ),
]
log = logging.getLogger(__name__)


class Format(StrEnum):
    """``--format``: a table for people, JSON for scripts."""

    TABLE = "table"
    JSON = "json"


RunId = Annotated[
    int, typer.Argument(metavar="RUN_ID", min=1, help="Id of the run.", show_default=False)
]


class NoLocalSuperLink(NotFound):
    """A simulation federation's command found no local SuperLink running (none is started
    but by `flwr run`): no run is pending or running there."""


def app_and_federation(app_dir: Path, federation: str | None) -> tuple[Path, str | None]:
    """``(app_dir, federation)``, except that a lone APP_DIR naming no directory, and no path
    (``flwr ls prod``), is the federation of the app in the current directory (or, outside an
    app, of the user config)."""
    if federation is None and not app_dir.exists() and len(app_dir.parts) == 1:
        return Path("."), str(app_dir)
    return app_dir, federation


def find_federation(app_dir: Path, federation: str | None) -> tuple[Path, Federation]:
    """The federation to use from ``app_dir`` (see `app_and_federation`): the app's lookup if
    it holds a pyproject.toml, else the user config's and the built-ins."""
    app_dir, federation = app_and_federation(app_dir, federation)
    if not (app_dir / PYPROJECT).is_file():
        if not app_dir.is_dir():
            raise InvalidArgument(f"{app_dir}: no such app directory")
        return app_dir, resolve_user_federation(federation)
    return app_dir, resolve_federation(load_app_config(app_dir), federation, app_dir)


def open_client(
    app_dir: Path,
    federation: str | None,
    *,
    purpose: str = "this command",
    simulation: bool = True,
) -> ExecClient:
    """A client of the Exec API of ``federation`` (or the default one), found from
    ``app_dir`` (`find_federation`). ``simulation=False``: a simulation federation is refused
    (``purpose`` names who needed an address); else its local SuperLink is used if running."""
    app_dir, fed = find_federation(app_dir, federation)
    if not simulation:
        fed.require_address(purpose)
    return connect(fed, app_dir)


def connect(
    fed: Federation,
    app_dir: Path = Path("."),
    *,
    start_local: bool = False,
    purpose: str = "this command",
) -> ExecClient:
    """A client of ``fed``'s Exec API, with the user's login if there is one (`flwr login`);
    plaintext beyond this machine earns a warning, and never carries a login.

    A simulation federation goes to the local SuperLink: started if needed with
    ``start_local`` (`flwr run`), else the running one, else `NoLocalSuperLink`."""
    if fed.is_simulation:
        return ExecClient(_local_address(fed, start_local), insecure=True)
    address = fed.require_address(purpose)
    credentials = credentials_path(fed.name, address)
    if fed.insecure and not is_loopback_address(fed.address):
        if credentials.exists():
            raise InvalidArgument(
                f"federation {fed.name!r}: refusing to send your login to {fed.address} "
                "without TLS (insecure = true); use TLS, or `flwr logout`"
            )
        log.warning(
            "federation %r: talking to %s without TLS (insecure = true)", fed.name, fed.address
        )
    return ExecClient(
        fed.address,
        insecure=fed.insecure,
        root_certificates=fed.root_certificates,
        client_tls=fed.client_tls,
        auth=TokenSession(credentials),
        login_hint=not_logged_in_message(fed.name, app_dir),
    )


def _local_address(fed: Federation, start: bool) -> str:
    if start:
        return ensure_local_superlink()
    running = running_local_superlink()
    if running is None:
        raise NoLocalSuperLink(
            f"no local SuperLink is running (`flwr run` starts it; it exits after "
            f"{IDLE_TIMEOUT / 60:g} min idle), so simulation federation {fed.name!r} has no "
            f"pending or running run; past runs, kept in {local_superlink_dir()}, are listed "
            "again once it runs"
        )
    return running.exec_address
