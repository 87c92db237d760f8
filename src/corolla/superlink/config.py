"""`SuperLinkConfig`: everything `flower-superlink` runs with, parsed once and validated."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from corolla.common.appio import read_secret_file
from corolla.common.config import Command, Option, UsageError, Values, address, count, duration
from corolla.common.config import path as path_value
from corolla.common.errors import InvalidArgument
from corolla.common.paths import corolla_home
from corolla.common.tls import ServerTls


def default_max_concurrent_runs() -> int:
    """A small number fitted to the machine: one ServerApp per two cores, at least 2, at most 8."""
    return min(8, max(2, (os.cpu_count() or 2) // 2))


@dataclass(frozen=True)
class SuperLinkConfig:
    serverappio_address: str = "0.0.0.0:9091"
    fleet_address: str = "0.0.0.0:9092"
    exec_address: str = "0.0.0.0:9093"
    database: str = ":memory:"
    tls: ServerTls | None = field(default=None, repr=False)  # None: plaintext (--insecure)
    tls_root_certificates: Path | None = None  # what local app processes trust
    isolation: str = "subprocess"
    appio_secret: str | None = field(default=None, repr=False)  # required for "process"
    app_attach_timeout: float = 300.0
    app_heartbeat_timeout: float = 15.0
    # ServerApp processes serving runs at once; further runs wait, `pending`, in order.
    max_concurrent_runs: int = field(default_factory=default_max_concurrent_runs)
    # subprocess mode: fail a run whose flwr-serverapp has not started it within this (s).
    app_start_timeout: float = 120.0
    # Once listening, write {"serverappio": "host:port", "fleet": ..., "exec": ...} here (JSON).
    ready_file: Path | None = None


EPILOG = """\
TLS: give --ssl-certfile and --ssl-keyfile to serve every API with TLS (--ssl-ca-certfile: the
CA that signed the certificate, handed to local flwr-serverapp processes), or --insecure to serve
without it. Isolation 'process': flwr-serverapp processes are started by the operator and attach
with the secret in --appio-secret-file (same file, or COROLLA_APPIO_SECRET, on their side).
"""


def command() -> Command:
    return Command(
        prog="flower-superlink",
        table="superlink",
        description="Serve the ServerAppIo, Fleet and Exec APIs of a Corolla federation.",
        epilog=EPILOG,
        options=(
            Option("--serverappio-api-address", "bind ServerAppIo", "0.0.0.0:9091", address),
            Option("--fleet-api-address", "bind Fleet", "0.0.0.0:9092", address),
            Option("--exec-api-address", "bind Exec", "0.0.0.0:9093", address),
            Option(
                "--database",
                "SQLite file for runs, messages, logs (':memory:' keeps nothing)",
                str(corolla_home() / "superlink" / "state.db"),
                metavar="PATH",
            ),
            Option("--insecure", "serve without TLS", switch=True),
            Option("--ssl-certfile", "server certificate (PEM)", parse=path_value),
            Option("--ssl-keyfile", "server private key (PEM)", parse=path_value),
            Option("--ssl-ca-certfile", "CA certificate (PEM)", parse=path_value),
            Option(
                "--isolation",
                "who starts flwr-serverapp",
                "subprocess",
                choices=("subprocess", "process"),
            ),
            Option(
                "--appio-secret-file",
                "shared secret of attached app processes",
                parse=path_value,
                metavar="PATH",
            ),
            Option(
                "--app-attach-timeout",
                "isolation process: fail a run no flwr-serverapp picks up within this (s)",
                300.0,
                duration,
                "SECONDS",
            ),
            Option(
                "--app-heartbeat-timeout",
                "isolation process: fail a run whose flwr-serverapp is silent this long (s)",
                15.0,
                duration,
                "SECONDS",
            ),
            Option(
                "--app-start-timeout",
                "isolation subprocess: fail a run whose flwr-serverapp has not started it "
                "within this (s)",
                120.0,
                duration,
                "SECONDS",
            ),
            Option(
                "--max-concurrent-runs",
                "ServerApps running at once; further runs wait, pending, in order",
                default_max_concurrent_runs(),
                count,
                "N",
            ),
            Option(
                "--ready-file",
                "once listening, write the bound addresses and pid here (JSON)",
                parse=path_value,
                metavar="PATH",
                env=False,  # one per process: a shared variable would collide
            ),
        ),
    )


def parse_config(
    argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> SuperLinkConfig:
    """Parse and validate flags, environment and config file; raises `UsageError`."""
    values = command().parse(argv, environ=environ)
    insecure = values.get("insecure", bool)
    certfile = values.optional("ssl-certfile", Path)
    keyfile = values.optional("ssl-keyfile", Path)
    isolation = values.get("isolation", str)
    return SuperLinkConfig(
        serverappio_address=values.get("serverappio-api-address", str),
        fleet_address=values.get("fleet-api-address", str),
        exec_address=values.get("exec-api-address", str),
        database=values.get("database", str),
        tls=_tls(insecure, certfile, keyfile),
        tls_root_certificates=values.optional("ssl-ca-certfile", Path) or certfile,
        isolation=isolation,
        appio_secret=_secret(values, isolation),
        app_attach_timeout=values.get("app-attach-timeout", float),
        app_heartbeat_timeout=values.get("app-heartbeat-timeout", float),
        max_concurrent_runs=values.get("max-concurrent-runs", int),
        app_start_timeout=values.get("app-start-timeout", float),
        ready_file=values.optional("ready-file", Path),
    )


def _tls(insecure: bool, certfile: Path | None, keyfile: Path | None) -> ServerTls | None:
    if insecure:
        if certfile or keyfile:
            raise UsageError("--insecure and --ssl-certfile/--ssl-keyfile exclude each other")
        return None
    if not (certfile and keyfile):
        raise UsageError("give --ssl-certfile and --ssl-keyfile for TLS, or --insecure")
    try:
        return ServerTls.from_files(certfile, keyfile)
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from exc


def _secret(values: Values, isolation: str) -> str | None:
    if isolation != "process":
        return None
    secret_file = values.optional("appio-secret-file", Path)
    if secret_file is None:
        raise UsageError("--isolation process needs --appio-secret-file")
    try:
        return read_secret_file(secret_file)
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from exc
