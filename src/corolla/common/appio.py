"""Access control of the AppIo APIs (ServerAppIo, ClientAppIo): the shared secret.

An app process proves it may ask for work (``RequestRun``) with a secret shared with its
daemon: read from ``--appio-secret-file`` (daemon and app process) or, for the app process,
from the environment variable ``COROLLA_APPIO_SECRET``. Never on a command line. After that,
every call carries the per-run token the daemon handed out. In isolation ``subprocess`` the
daemon makes a random secret that nobody else knows and gives its children tokens directly.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from corolla.common.errors import InvalidArgument, PermissionDenied, Unauthenticated
from corolla.common.guard import Caller, CallInfo, Credential
from corolla.common.net import is_loopback_address
from corolla.common.transfer import TOKEN_KEY

SECRET_ENV = "COROLLA_APPIO_SECRET"
TOKEN_ENV = "COROLLA_APP_TOKEN"
MIN_SECRET_LENGTH = 16

log = logging.getLogger(__name__)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def read_secret_file(path: Path) -> str:
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the AppIo secret file {path}: {exc}") from exc
    if len(secret) < MIN_SECRET_LENGTH:
        raise InvalidArgument(
            f"the AppIo secret in {path} is too short (at least {MIN_SECRET_LENGTH} characters)"
        )
    return secret


def app_secret(path: Path | None) -> str | None:
    """The app process's secret: the file if given, else ``COROLLA_APPIO_SECRET``, else None."""
    if path is not None:
        return read_secret_file(path)
    secret = os.environ.get(SECRET_ENV, "").strip()
    if secret and len(secret) < MIN_SECRET_LENGTH:
        raise InvalidArgument(
            f"{SECRET_ENV} is too short (at least {MIN_SECRET_LENGTH} characters)"
        )
    return secret or None


def check_secret(expected: str, given: str) -> None:
    """Constant-time comparison; a missing or wrong secret is `Unauthenticated`."""
    if not given:
        raise Unauthenticated("the AppIo secret is missing")
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise Unauthenticated("wrong AppIo secret")


def warn_if_exposed(address: str, tls: bool, api: str) -> None:
    """Log a warning when an AppIo API listens beyond loopback without TLS."""
    if tls:
        return
    if not is_loopback_address(address):
        log.warning(
            "%s API bound to %s without TLS: app processes' traffic (tokens included) can be "
            "read on the network; bind to 127.0.0.1 or enable TLS",
            api,
            address,
        )


class AppIoAuth:
    """The AppIo APIs' authenticator (see `corolla.common.guard`): ``RequestRun`` needs the
    shared secret, every other call a run token (field ``token``, or ``corolla-token``
    metadata for the object streams) that ``resolve`` maps to its run (`Unauthenticated`
    for an unknown or void one)."""

    def __init__(self, secret: str, resolve: Callable[[str], int]) -> None:
        self._secret = secret
        self._resolve = resolve

    def __call__(self, credential: Credential, call: CallInfo) -> Caller:
        request = call.request
        if credential is Credential.APP_SECRET:
            check_secret(self._secret, str(getattr(request, "secret", "")))
            return Caller(credential)
        if credential is not Credential.RUN_TOKEN:
            raise PermissionDenied(f"{call.method} is not an AppIo call")
        token = str(getattr(request, "token", "") or call.metadata.get(TOKEN_KEY, ""))
        if not token:
            raise Unauthenticated("this call needs the run's token")
        return Caller(credential, run_id=self._resolve(token), token=token)
