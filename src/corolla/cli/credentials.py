"""Where the CLI keeps a user's tokens: one owner-only (0600) file per federation and SuperLink
address under `config_dir()`. Tokens never appear in output, logs, messages or reprs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corolla.common import errors
from corolla.common.paths import write_private

HOME_ENV = "FLWR_HOME"
_FILE_VERSION = 1


@dataclass(frozen=True)
class Tokens:
    """What a login yields; ``expires_at`` is Unix seconds, 0 when the provider gave no lifetime.

    The tokens themselves stay out of ``repr``."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)  # "" when the provider issued none
    expires_at: float
    issuer: str
    client_id: str
    token_endpoint: str
    revocation_endpoint: str  # "" when the provider has none
    scopes: tuple[str, ...]


def config_dir() -> Path:
    """``$FLWR_HOME``, else ``$XDG_CONFIG_HOME/corolla``, else ``~/.config/corolla``."""
    if home := os.environ.get(HOME_ENV):
        return Path(home).expanduser()
    if xdg := os.environ.get("XDG_CONFIG_HOME"):
        return Path(xdg).expanduser() / "corolla"
    return Path.home() / ".config" / "corolla"


def credentials_path(federation: str, address: str) -> Path:
    """The token file of ``federation`` at ``address``: one name per (federation, address) pair,
    so a federation pointed at another SuperLink never sends it the old server's tokens."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", federation).strip("._")[:40] or "federation"
    digest = hashlib.sha256(f"{federation}\0{address}".encode()).hexdigest()[:16]
    return config_dir() / "credentials" / f"{readable}-{digest}.json"


def not_logged_in_message(federation: str, app_dir: Path | str = ".") -> str:
    """The one line to show when a command needs a login that is missing or over."""
    app = shlex.quote(str(app_dir))
    return f"not logged in to federation {federation!r} (run `flwr login {app} {federation}`)"


def load_tokens(path: Path) -> Tokens | None:
    """The tokens stored at ``path``, or None if there are none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != _FILE_VERSION:
            raise ValueError("unknown format")
        scopes = data["scopes"]
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ValueError("bad scopes")
        tokens = Tokens(
            access_token=_str(data, "access_token"),
            refresh_token=_str(data, "refresh_token"),
            expires_at=float(data["expires_at"]),
            issuer=_str(data, "issuer"),
            client_id=_str(data, "client_id"),
            token_endpoint=_str(data, "token_endpoint"),
            revocation_endpoint=_str(data, "revocation_endpoint"),
            scopes=tuple(scopes),
        )
    except (ValueError, KeyError, TypeError):  # json.JSONDecodeError is a ValueError
        raise errors.InvalidArgument(
            f"{path}: unreadable credentials; run `flwr login` again"
        ) from None  # the cause could quote the file, and the file holds tokens
    if not tokens.access_token:
        raise errors.InvalidArgument(f"{path}: no access token stored; run `flwr login` again")
    return tokens


def save_tokens(path: Path, tokens: Tokens) -> None:
    """Store ``tokens`` at ``path`` atomically, owner-only (0600) from the start, in a 0700
    directory."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    data = {
        "version": _FILE_VERSION,
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "expires_at": tokens.expires_at,
        "issuer": tokens.issuer,
        "client_id": tokens.client_id,
        "token_endpoint": tokens.token_endpoint,
        "revocation_endpoint": tokens.revocation_endpoint,
        "scopes": list(tokens.scopes),
    }
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write_private(temp, json.dumps(data, indent=2).encode() + b"\n")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def delete_tokens(path: Path) -> bool:
    """Remove the token file; False if there was none."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(key)
    return value
