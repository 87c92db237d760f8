"""Configs of the app process commands, `flwr-serverapp` and `flwr-clientapp`, parsed once.

Precedence as for the daemons (`corolla.common.config`): flag > ``COROLLA_*`` > ``--config``
file (tables ``[serverapp]``, ``[clientapp]``) > default. A process started by its daemon
(``COROLLA_APP_TOKEN`` set) takes its settings from flags and file only: the daemon's own
``COROLLA_*`` variables, inherited with its environment, are not meant for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from corolla.common.appio import SECRET_ENV, TOKEN_ENV, app_secret
from corolla.common.config import Command, Option, UsageError, Values, address, count, duration
from corolla.common.config import path as path_value
from corolla.common.errors import CorollaError
from corolla.common.tls import ClientTls, read_root_certificates

__all__ = [
    "ClientAppProcessConfig",
    "ServerAppConfig",
    "clientapp_command",
    "parse_clientapp_config",
    "parse_serverapp_config",
    "serverapp_command",
]


@dataclass(frozen=True)
class ServerAppConfig:
    address: str
    insecure: bool
    root_certificates: Path | None
    token: str | None  # subprocess mode
    secret: str | None  # process mode
    max_runs: int | None
    # How long calls to the SuperLink keep retrying while it is away (s).
    retry_window: float = 600.0
    client_tls: ClientTls | None = field(default=None, repr=False)  # for mutual TLS


@dataclass(frozen=True)
class ClientAppProcessConfig:
    """``token`` set: isolation subprocess (one run); empty: isolation process (``secret``)."""

    address: str
    insecure: bool
    token: str = field(default="", repr=False)
    root_certificates: bytes | None = field(default=None, repr=False)
    secret: str = field(default="", repr=False)
    max_runs: int = 0  # isolation process: exit after this many runs (0: never)
    client_tls: ClientTls | None = field(default=None, repr=False)  # for mutual TLS

    @property
    def external(self) -> bool:
        return not self.token


def _runs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise ValueError(f"must be 0 (no limit) or more, got {text!r}")
    return value


_INSECURE = Option("--insecure", "connect without TLS (local testing only)", switch=True)
_CLIENT_CERTFILE = Option(
    "--ssl-client-certfile",
    "PEM client certificate to present to a daemon that requires one (mutual TLS)",
    parse=path_value,
    metavar="PATH",
)
_CLIENT_KEYFILE = Option(
    "--ssl-client-keyfile",
    "PEM private key of --ssl-client-certfile (a path: never the key itself)",
    parse=path_value,
    metavar="PATH",
)
_SECRET_FILE = Option(
    "--appio-secret-file",
    f"isolation process: file holding the AppIo secret (or set {SECRET_ENV}; never pass the "
    "secret itself on the command line)",
    parse=path_value,
    metavar="PATH",
)


def serverapp_command() -> Command:
    return Command(
        prog="flwr-serverapp",
        table="serverapp",
        description="Run ServerApps against the SuperLink's ServerAppIo API. Started by the "
        f"SuperLink ({TOKEN_ENV} set) it runs one run; started by an operator (isolation "
        "process) it asks for runs with the AppIo secret.",
        options=(
            Option(
                "--serverappio-api-address",
                "the SuperLink's ServerAppIo API",
                "127.0.0.1:9091",
                address,
                "HOST:PORT",
            ),
            _INSECURE,
            Option(
                "--root-certificates",
                "PEM CA certificates to verify the SuperLink",
                parse=path_value,
                metavar="PATH",
            ),
            _CLIENT_CERTFILE,
            _CLIENT_KEYFILE,
            _SECRET_FILE,
            Option("--max-runs", "exit after this many runs", parse=count, metavar="N"),
            Option(
                "--retry-window",
                "how long calls to the SuperLink keep retrying while it is away (s)",
                600.0,
                duration,
                "SECONDS",
            ),
        ),
    )


def clientapp_command() -> Command:
    return Command(
        prog="flwr-clientapp",
        table="clientapp",
        description="Run ClientApps for a SuperNode. Started by the SuperNode (isolation "
        f"subprocess, {TOKEN_ENV} set) it serves one run; started by an operator (isolation "
        "process) it waits for runs, serves them one after another and keeps running.",
        options=(
            Option(
                "--clientappio-api-address",
                "the SuperNode's ClientAppIo API",
                "127.0.0.1:9094",
                address,
                "HOST:PORT",
            ),
            _INSECURE,
            Option(
                "--root-certificates",
                "PEM CA certificates to verify the SuperNode's ClientAppIo API (default "
                "without --insecure: the system roots)",
                parse=path_value,
                metavar="PATH",
            ),
            _CLIENT_CERTFILE,
            _CLIENT_KEYFILE,
            _SECRET_FILE,
            Option(
                "--max-runs",
                "isolation process: exit 0 after serving N runs (0: keep running)",
                0,
                _runs,
                "N",
            ),
        ),
    )


def _values(
    command: Command, argv: Sequence[str] | None, environ: Mapping[str, str] | None
) -> tuple[Values, str]:
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV, "")
    return command.parse(argv, environ={} if token else env), token


def _client_tls(values: Values, insecure: bool) -> ClientTls | None:
    names = (values.label("ssl-client-certfile"), values.label("ssl-client-keyfile"))
    certfile = values.optional("ssl-client-certfile", Path)
    keyfile = values.optional("ssl-client-keyfile", Path)
    if insecure and (certfile or keyfile):
        raise UsageError(f"--insecure means no TLS; drop {names[0]}/{names[1]} or --insecure")
    try:
        return ClientTls.from_options(certfile, keyfile, names)
    except CorollaError as exc:
        raise UsageError(str(exc)) from exc


def parse_serverapp_config(
    argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> ServerAppConfig:
    """Flags, environment and config file of ``flwr-serverapp``; raises `UsageError`."""
    values, token = _values(serverapp_command(), argv, environ)
    insecure = values.get("insecure", bool)
    roots = values.optional("root-certificates", Path)
    try:
        secret = None if token else app_secret(values.optional("appio-secret-file", Path))
    except CorollaError as exc:
        raise UsageError(str(exc)) from exc
    if not token and secret is None:
        raise UsageError(
            f"no AppIo secret: give --appio-secret-file or set {SECRET_ENV} (isolation process)"
        )
    if insecure == (roots is not None):
        raise UsageError("give either --insecure or --root-certificates")
    client_tls = _client_tls(values, insecure)
    return ServerAppConfig(
        address=values.get("serverappio-api-address", str),
        insecure=insecure,
        root_certificates=roots,
        token=token or None,
        secret=secret,
        max_runs=values.optional("max-runs", int),
        retry_window=values.get("retry-window", float),
        client_tls=client_tls,
    )


def parse_clientapp_config(
    argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> ClientAppProcessConfig:
    """Flags, environment and config file of ``flwr-clientapp``; raises `UsageError`."""
    values, token = _values(clientapp_command(), argv, environ)
    insecure = values.get("insecure", bool)
    roots_file = values.optional("root-certificates", Path)
    secret_file = values.optional("appio-secret-file", Path)
    max_runs = values.get("max-runs", int)
    if insecure and roots_file is not None:
        raise UsageError("--insecure means no TLS; drop --root-certificates or --insecure")
    client_tls = _client_tls(values, insecure)
    try:
        roots = read_root_certificates(roots_file) if roots_file else None
        secret = "" if token else app_secret(secret_file)
    except CorollaError as exc:
        raise UsageError(str(exc)) from exc
    if token and (max_runs or secret_file):
        raise UsageError(
            f"{TOKEN_ENV} is set, so this process serves the one run its SuperNode started it "
            "for; --max-runs and --appio-secret-file apply to isolation process only"
        )
    if not token and not secret:
        raise UsageError(
            f"no AppIo secret: pass --appio-secret-file PATH or set {SECRET_ENV} (isolation "
            f"process); a SuperNode's own app processes get {TOKEN_ENV} instead"
        )
    return ClientAppProcessConfig(
        address=values.get("clientappio-api-address", str),
        insecure=insecure,
        token=token,
        root_certificates=roots,
        secret=secret or "",
        max_runs=max_runs,
        client_tls=client_tls,
    )
