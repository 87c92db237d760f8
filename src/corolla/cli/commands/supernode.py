"""`flwr supernode`: the SuperNode allow-list of a federation (SuperNode authentication)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from corolla.cli.commands._shared import AppDir, FederationName, Format, open_client
from corolla.cli.exec_client import NodeInfo
from corolla.cli.output import format_time, iso_time
from corolla.common import nodekeys
from corolla.common.errors import InvalidArgument

app = typer.Typer(
    name="supernode",
    help="Register, list and unregister the SuperNodes of a federation.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command()
def register(
    public_key_file: Annotated[
        Path, typer.Argument(metavar="PUBLIC_KEY_FILE", help="The SuperNode's public key.")
    ],
    app_dir: AppDir = Path("."),
    federation: FederationName = None,
) -> None:
    """Allow the SuperNode holding the private half of PUBLIC_KEY_FILE (PEM or OpenSSH) to
    join; prints the node id it gets."""
    try:
        public_key = public_key_file.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {public_key_file}: {exc}") from exc
    nodekeys.load_public_key(public_key, str(public_key_file))  # a clear error before the call
    with open_client(app_dir, federation, purpose="flwr supernode", simulation=False) as client:
        node_id, fingerprint = client.register_node(public_key)
    print(f"registered SuperNode {node_id} (key {fingerprint})")


@app.command()
def unregister(
    node_id: Annotated[int, typer.Argument(metavar="NODE_ID", min=1, show_default=False)],
    app_dir: AppDir = Path("."),
    federation: FederationName = None,
) -> None:
    """Remove NODE_ID and its key: its next request is refused."""
    with open_client(app_dir, federation, purpose="flwr supernode", simulation=False) as client:
        client.unregister_node(node_id)
    print(f"unregistered SuperNode {node_id}")


@app.command("ls")
def list_nodes(
    app_dir: AppDir = Path("."),
    federation: FederationName = None,
    output_format: Annotated[
        Format, typer.Option("--format", help="table for people, json for scripts.")
    ] = Format.TABLE,
) -> None:
    """List the SuperNodes: id, key fingerprint, online or offline, last seen."""
    with open_client(app_dir, federation, purpose="flwr supernode", simulation=False) as client:
        nodes, _now = client.list_nodes()
    if output_format is Format.JSON:
        print(json.dumps([_to_json(node) for node in nodes], indent=2))
        return
    print(f"{'NODE ID':<20} {'KEY':<24} {'STATUS':<8} LAST SEEN")
    for node in nodes:
        key = node.fingerprint[:23] if node.fingerprint else "-"
        status = "online" if node.online else "offline"
        seen = format_time(node.last_seen) if node.last_seen else "never"
        print(f"{node.node_id:<20} {key:<24} {status:<8} {seen}")


@app.command()
def keygen(
    private_key: Annotated[
        Path, typer.Argument(metavar="PRIVATE_KEY_FILE", help="Where to write the private key.")
    ],
) -> None:
    """Make an ECDSA P-256 key pair for a SuperNode: PRIVATE_KEY_FILE (0600) and
    PRIVATE_KEY_FILE.pub, the public key to `flwr supernode register`."""
    if private_key.exists():
        raise InvalidArgument(f"{private_key} exists already; not overwriting a key")
    public = private_key.with_name(private_key.name + ".pub")
    fingerprint = nodekeys.generate(private_key, public)
    print(f"wrote {private_key} and {public} (key {fingerprint})")


def _to_json(node: NodeInfo) -> dict[str, object]:
    return {
        "node_id": node.node_id,
        "fingerprint": node.fingerprint or None,
        "online": node.online,
        "last_seen": iso_time(node.last_seen),
        "registered_at": iso_time(node.registered_at),
    }
