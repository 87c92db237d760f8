"""Arguments several commands take, and opening the Exec API of the chosen federation."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from corolla.cli.auth import TokenSession
from corolla.cli.config import Federation, resolve_federation
from corolla.cli.credentials import credentials_path, not_logged_in_message
from corolla.cli.exec_client import ExecClient
from corolla.common.errors import InvalidArgument
from corolla.common.net import is_loopback_address
from corolla.fab import load_app_config

AppDir = Annotated[
    Path,
    typer.Argument(metavar="APP_DIR", help="App directory (the one holding pyproject.toml)."),
]
FederationName = Annotated[
    str | None,
    typer.Argument(
        metavar="FEDERATION",
        help="Federation from [tool.flwr.federations] (default: its 'default').",
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


def open_client(app_dir: Path, federation: str | None) -> ExecClient:
    """A client of the Exec API of ``federation`` (or the default one) of the app."""
    return connect(resolve_federation(load_app_config(app_dir), federation, app_dir), app_dir)


def connect(fed: Federation, app_dir: Path = Path(".")) -> ExecClient:
    """A client of ``fed``'s Exec API, with the user's login if there is one (`flwr login`);
    plaintext beyond this machine earns a warning, and never carries a login."""
    credentials = credentials_path(fed.name, fed.address)
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
