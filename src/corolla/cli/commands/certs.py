"""`flwr certs`: write a development CA, a server certificate and client certificates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from corolla.common.errors import AlreadyExists

Directory = Annotated[
    Path, typer.Argument(metavar="DIR", help="Where to write the PEM files (created if needed).")
]
Hosts = Annotated[
    list[str] | None,
    typer.Option(
        "--host",
        metavar="HOST",
        help="A DNS name or IP address the server certificate is for. May repeat; localhost, "
        "127.0.0.1 and ::1 are always included (a daemon's own app processes use them).",
        show_default=False,
    ),
]
Clients = Annotated[
    list[str] | None,
    typer.Option(
        "--client",
        metavar="NAME",
        help="Make a client certificate NAME.pem / NAME.key (mutual TLS). May repeat; "
        "default: one called 'client'.",
        show_default=False,
    ),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace files that exist.")]


def certs(
    directory: Directory,
    host: Hosts = None,
    client: Clients = None,
    overwrite: Overwrite = False,
) -> None:
    """Write a development CA, a server certificate and client certificates into DIR.

    For trying TLS and mutual TLS out: the CA's key is not kept (to add a certificate, make a
    new set) and everything expires after 30 days.
    """
    # Imported here: every flwr command would otherwise pay for the deployment helpers.
    from corolla.deploy.certs import DEFAULT_CLIENTS, DEFAULT_HOSTS, generate, paths

    clients = client or DEFAULT_CLIENTS
    existing = [path for path in paths(directory, clients).files() if path.exists()]
    if existing and not overwrite:
        raise AlreadyExists(f"{existing[0]} exists; --overwrite replaces it")
    written = generate(directory, (*DEFAULT_HOSTS, *(host or [])), clients)
    until = f"{written.not_valid_after:%Y-%m-%d}" if written.not_valid_after else "?"
    rows = [
        (written.ca_cert, "CA certificate: what every side trusts"),
        (written.server_cert, f"server certificate for {', '.join(written.hosts)}"),
        (written.server_key, "its private key (mode 0600)"),
    ]
    for name, pair in written.clients.items():
        rows += [
            (pair.cert, f"client certificate {name!r}"),
            (pair.key, "its private key (mode 0600)"),
        ]
    width = max(len(str(path)) for path, _ in rows)
    print(f"Wrote a development CA and certificates, valid until {until}:")
    for path, what in rows:
        print(f"  {path!s:<{width}}  {what}")
    print("How to use them: docs/tls.md (for development only; keep the .key files private).")
