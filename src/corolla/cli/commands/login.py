"""`flwr login` and `flwr logout`: a user's tokens for a federation whose SuperLink wants them."""

from __future__ import annotations

import logging
from pathlib import Path

from corolla.cli.auth import device_login, http_client, revoke, user_name
from corolla.cli.commands._shared import AppDir, FederationName, connect, find_federation
from corolla.cli.credentials import credentials_path, delete_tokens, load_tokens, save_tokens
from corolla.common.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)


def login(app_dir: AppDir = Path("."), federation: FederationName = None) -> None:
    """Log in to FEDERATION: prints a web address and a code to approve there, in any browser,
    then waits for the approval and keeps the tokens (owner-only) for later commands."""
    app_dir, fed = find_federation(app_dir, federation)
    fed.require_address("logging in (a simulation runs on this machine and needs no login)")
    with connect(fed, app_dir) as client:
        details = client.get_login_details()
    if details is None:
        _say(f"Federation {fed.name!r} does not require a login.")
        return
    with http_client() as http:
        tokens = device_login(details, http=http, say=_say)
    save_tokens(credentials_path(fed.name, fed.address), tokens)
    who = user_name(tokens.access_token)
    _say(f"Logged in to federation {fed.name!r}" + (f" as {who}" if who else "") + ".")


def logout(app_dir: AppDir = Path("."), federation: FederationName = None) -> None:
    """Log out of FEDERATION: revokes the tokens at the identity provider where it allows it,
    and deletes them from this computer (even if the provider cannot be reached)."""
    app_dir, fed = find_federation(app_dir, federation)
    path = credentials_path(fed.name, fed.address)
    try:
        tokens = load_tokens(path)
    except InvalidArgument:
        tokens = None  # unreadable: nothing to revoke, but still delete it
        log.warning("%s was unreadable; deleting it", path)
    revoked = False
    if tokens is not None:
        try:
            with http_client() as http:
                revoked = revoke(tokens, http=http)
        except Unavailable as exc:
            log.warning("%s; the tokens stay valid there until they expire", exc)
    if not delete_tokens(path):
        _say(f"Not logged in to federation {fed.name!r}.")
        return
    if revoked:
        _say(f"Logged out of federation {fed.name!r} (tokens revoked at the identity provider).")
    else:
        _say(f"Logged out of federation {fed.name!r} (tokens deleted from this computer).")


def _say(line: str) -> None:
    print(line, flush=True)
