"""`SuperLinkConfig`: everything `flower-superlink` runs with, parsed once and validated."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from corolla.common.appenv import env_names
from corolla.common.appio import read_secret_file
from corolla.common.compression import MIN_SAVING, NONE, SETTINGS
from corolla.common.config import Command, Option, UsageError, Values, address, count, duration
from corolla.common.config import path as path_value
from corolla.common.errors import InvalidArgument
from corolla.common.paths import corolla_home
from corolla.common.tls import AppTls, ClientTls, ServerTls
from corolla.fab.limits import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_FAB_BYTES,
    DEFAULT_MAX_RATIO,
    DEFAULT_MAX_UNPACKED_BYTES,
    FabLimits,
    parse_size,
)
from corolla.superlink.state import is_postgres_url
from corolla.superlink.state.base import StateLimits
from corolla.superlink.userauth import UserAuthConfig, load_user_auth_config

_LIMITS = StateLimits()
DEFAULT_SERVERAPPIO = "0.0.0.0:9091"
DEFAULT_FLEET = "0.0.0.0:9092"
DEFAULT_EXEC = "0.0.0.0:9093"
_BIND_HELP = "bind {}; with --insecure the default host is 127.0.0.1"


def default_max_concurrent_runs() -> int:
    """A small number fitted to the machine: one ServerApp per two cores, at least 2, at most 8."""
    return min(8, max(2, (os.cpu_count() or 2) // 2))


@dataclass(frozen=True)
class SuperLinkConfig:
    serverappio_address: str = "0.0.0.0:9091"
    fleet_address: str = "0.0.0.0:9092"
    exec_address: str = "0.0.0.0:9093"
    database: str = ":memory:"  # an SQLite file, ":memory:", or a postgresql:// URL
    # A PostgreSQL database's object files (payloads); None for SQLite (beside its file).
    object_dir: Path | None = None
    tls: ServerTls | None = field(default=None, repr=False)  # None: plaintext (--insecure)
    # How the flwr-serverapp processes it starts reach ServerAppIo (None: plaintext).
    app_tls: AppTls | None = None
    isolation: str = "subprocess"
    appio_secret: str | None = field(default=None, repr=False)  # required for "process"
    app_attach_timeout: float = 300.0
    app_heartbeat_timeout: float = 15.0
    # ServerApp processes serving runs at once; further runs wait, `pending`, in order.
    max_concurrent_runs: int = field(default_factory=default_max_concurrent_runs)
    # subprocess mode: fail a run whose flwr-serverapp has not started it within this (s).
    app_start_timeout: float = 120.0
    # isolation subprocess: variables of its environment passed on to its flwr-serverapp
    # processes besides the allow-list of `corolla.common.appenv` (--app-env).
    app_env: tuple[str, ...] = ()
    # isolation subprocess: keep a spare flwr-serverapp process, imported and waiting, for the
    # next run (`corolla.common.spare`); off with --no-spare-app-process.
    spare_app_process: bool = True
    # Bounds on a submitted FAB: size, unpacked size, entries, compression ratio.
    fab_limits: FabLimits = field(default_factory=FabLimits)
    # Once listening, write {"serverappio": "host:port", "fleet": ..., "exec": ...} here (JSON).
    ready_file: Path | None = None
    # Fleet requests must be signed by a SuperNode key on the allow-list (`flwr supernode`).
    enable_supernode_auth: bool = False
    # Bounds on what clients store: object sizes, per-run objects and log bytes.
    state_limits: StateLimits = field(default_factory=StateLimits)
    # OIDC user login: Exec calls need an access token of this provider (None: no login).
    user_auth: UserAuthConfig | None = None
    # Exit (0, graceful) after this many seconds with no unfinished run and no Exec call
    # (None: serve until signalled). The CLI's local SuperLink for simulations uses it.
    idle_timeout: float | None = None
    # Compress object chunks it sends (Fleet and ServerAppIo pulls) toward pullers that accept
    # it: "none" or "zstd" (`corolla.common.compression`).
    compression: str = NONE


EPILOG = """\
TLS: give --ssl-certfile and --ssl-keyfile to serve every API with TLS (--ssl-ca-certfile: the
CA that signed the certificate, handed to local flwr-serverapp processes), or --insecure to serve
without it (the APIs then bind to 127.0.0.1 unless an address is given). Mutual TLS:
--require-client-certificate makes every API demand a client certificate signed by
--ssl-ca-certfile; in isolation subprocess the flwr-serverapp processes it starts present
--app-client-certfile/--app-client-keyfile. Isolation 'process': flwr-serverapp processes are
started by the operator and attach with the secret in --appio-secret-file (same file, or
COROLLA_APPIO_SECRET, on their side).
"""


def command() -> Command:
    return Command(
        prog="flower-superlink",
        table="superlink",
        description="Serve the ServerAppIo, Fleet and Exec APIs of a Corolla federation.",
        epilog=EPILOG,
        options=(
            Option(
                "--serverappio-api-address",
                _BIND_HELP.format("ServerAppIo"),
                DEFAULT_SERVERAPPIO,
                address,
                "HOST:PORT",
            ),
            Option(
                "--fleet-api-address",
                _BIND_HELP.format("Fleet"),
                DEFAULT_FLEET,
                address,
                "HOST:PORT",
            ),
            Option(
                "--exec-api-address",
                _BIND_HELP.format("Exec"),
                DEFAULT_EXEC,
                address,
                "HOST:PORT",
            ),
            Option(
                "--database",
                "SQLite file for runs, messages, logs (':memory:' keeps nothing), or the "
                "postgresql:// URL of a PostgreSQL database (password: PGPASSWORD or ~/.pgpass)",
                str(corolla_home() / "superlink" / "state.db"),
                metavar="PATH|URL",
            ),
            Option(
                "--object-dir",
                "with a PostgreSQL --database: the directory of the object files (large "
                "arrays), shared storage if several SuperLinks use the database (default "
                "$COROLLA_HOME/superlink/objects)",
                parse=path_value,
                metavar="PATH",
            ),
            Option("--insecure", "serve without TLS", switch=True),
            Option(
                "--enable-supernode-auth",
                "accept only Fleet requests signed by a registered SuperNode key "
                "(flwr supernode register)",
                switch=True,
            ),
            Option(
                "--user-auth-config",
                "OIDC user login: every Exec call needs an access token of the identity "
                "provider this file (TOML or YAML) names, and roles decide what a user may do "
                "(docs/user-auth.md)",
                parse=path_value,
                metavar="PATH",
            ),
            Option("--ssl-certfile", "server certificate (PEM)", parse=path_value),
            Option("--ssl-keyfile", "server private key (PEM)", parse=path_value),
            Option(
                "--ssl-ca-certfile",
                "CA certificate (PEM) of the server certificate, trusted by the flwr-serverapp "
                "processes it starts; with --require-client-certificate, client certificates "
                "must be signed by it too",
                parse=path_value,
                metavar="PATH",
            ),
            Option(
                "--require-client-certificate",
                "mutual TLS: every API demands a client certificate signed by --ssl-ca-certfile",
                switch=True,
            ),
            Option(
                "--app-client-certfile",
                "client certificate (PEM) of the flwr-serverapp processes it starts (isolation "
                "subprocess with --require-client-certificate; handed over by path)",
                parse=path_value,
                metavar="PATH",
            ),
            Option(
                "--app-client-keyfile",
                "private key (PEM) of --app-client-certfile (handed over by path)",
                parse=path_value,
                metavar="PATH",
            ),
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
                "--app-env",
                "isolation subprocess: pass this variable of the SuperLink's environment on to "
                "its flwr-serverapp processes too (repeatable, or NAME,NAME; the others but an "
                "allow-list stay behind)",
                parse=env_names,
                metavar="NAME",
                repeat=True,
            ),
            Option(
                "--no-spare-app-process",
                "isolation subprocess: keep no spare flwr-serverapp process ready for the next "
                "run (by default one waits, imported, so that a run does not wait for an "
                "interpreter to start)",
                switch=True,
            ),
            Option(
                "--max-fab-bytes",
                "refuse a submitted FAB larger than this (bytes, or e.g. 200MiB)",
                DEFAULT_MAX_FAB_BYTES,
                parse_size,
                "BYTES",
            ),
            Option(
                "--max-fab-unpacked-bytes",
                "refuse a FAB whose files add up to more than this (bytes, or e.g. 1GiB)",
                DEFAULT_MAX_UNPACKED_BYTES,
                parse_size,
                "BYTES",
            ),
            Option(
                "--max-fab-entries",
                "refuse a FAB with more files and directories than this",
                DEFAULT_MAX_ENTRIES,
                count,
                "N",
            ),
            Option(
                "--max-fab-compression-ratio",
                "refuse a FAB (or a file in it) that unpacks to more than this many times its "
                "size, past 1 MiB",
                DEFAULT_MAX_RATIO,
                count,
                "N",
            ),
            Option(
                "--max-object-bytes",
                "refuse a pushed object (a large array) larger than this",
                _LIMITS.max_object_bytes,
                parse_size,
                "BYTES",
            ),
            Option(
                "--max-run-object-bytes",
                "refuse object pushes that would make one run store more than this",
                _LIMITS.max_run_object_bytes,
                parse_size,
                "BYTES",
            ),
            Option(
                "--max-run-log-bytes",
                "keep at most this much of a run's log; older lines are dropped, with a marker",
                _LIMITS.max_run_log_bytes,
                parse_size,
                "BYTES",
            ),
            Option(
                "--compression",
                "compress the object chunks it sends (SuperNodes' and ServerApps' pulls) "
                "toward receivers that accept it, each chunk only where that saves at least "
                f"{MIN_SAVING:.0%}",
                NONE,
                choices=SETTINGS,
            ),
            Option(
                "--idle-timeout",
                "exit (code 0, as on SIGTERM) after this many seconds with no run pending, "
                "starting or running and no Exec call (default: never)",
                parse=duration,
                metavar="SECONDS",
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
    isolation = values.get("isolation", str)
    tls = _tls(values, insecure)
    return SuperLinkConfig(
        serverappio_address=_bind(values, "serverappio-api-address", insecure),
        fleet_address=_bind(values, "fleet-api-address", insecure),
        exec_address=_bind(values, "exec-api-address", insecure),
        database=values.get("database", str),
        object_dir=_object_dir(values),
        tls=tls,
        app_tls=_app_tls(values, tls, isolation),
        isolation=isolation,
        appio_secret=_secret(values, isolation),
        app_attach_timeout=values.get("app-attach-timeout", float),
        app_heartbeat_timeout=values.get("app-heartbeat-timeout", float),
        max_concurrent_runs=values.get("max-concurrent-runs", int),
        app_start_timeout=values.get("app-start-timeout", float),
        app_env=values.optional("app-env", tuple) or (),
        spare_app_process=_spare(values, isolation),
        fab_limits=FabLimits(
            max_fab_bytes=values.get("max-fab-bytes", int),
            max_unpacked_bytes=values.get("max-fab-unpacked-bytes", int),
            max_entries=values.get("max-fab-entries", int),
            max_ratio=values.get("max-fab-compression-ratio", int),
        ),
        ready_file=values.optional("ready-file", Path),
        enable_supernode_auth=values.get("enable-supernode-auth", bool),
        state_limits=StateLimits(
            max_object_bytes=values.get("max-object-bytes", int),
            max_run_object_bytes=values.get("max-run-object-bytes", int),
            max_run_log_bytes=values.get("max-run-log-bytes", int),
        ),
        user_auth=_user_auth(values),
        idle_timeout=values.optional("idle-timeout", float),
        compression=values.get("compression", str),
    )


def _object_dir(values: Values) -> Path | None:
    """Where a PostgreSQL state keeps its object files (an SQLite one: beside its file)."""
    given = values.optional("object-dir", Path)
    if not is_postgres_url(values.get("database", str)):
        if given is not None:
            raise UsageError(
                "--object-dir is for a PostgreSQL --database (postgresql://...): an SQLite "
                "state keeps its objects beside its file"
            )
        return None
    return given or corolla_home() / "superlink" / "objects"


def _user_auth(values: Values) -> UserAuthConfig | None:
    path = values.optional("user-auth-config", Path)
    if path is None:
        return None
    try:
        return load_user_auth_config(path)
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from exc


def _bind(values: Values, name: str, insecure: bool) -> str:
    """The address to bind: without TLS, a default one stays on this machine (loopback)."""
    bind = values.get(name, str)
    if insecure and not values.given(name):
        return "127.0.0.1:" + bind.rpartition(":")[2]
    return bind


def _tls(values: Values, insecure: bool) -> ServerTls | None:
    certfile = values.optional("ssl-certfile", Path)
    keyfile = values.optional("ssl-keyfile", Path)
    ca_certfile = values.optional("ssl-ca-certfile", Path)
    require = values.get("require-client-certificate", bool)
    if insecure:
        if certfile or keyfile or require:
            raise UsageError(
                "--insecure and --ssl-certfile/--ssl-keyfile/--require-client-certificate "
                "exclude each other"
            )
        return None
    if not (certfile and keyfile):
        raise UsageError("give --ssl-certfile and --ssl-keyfile for TLS, or --insecure")
    if require and ca_certfile is None:
        raise UsageError(
            f"{values.label('require-client-certificate')} needs --ssl-ca-certfile: the CA "
            "that client certificates must be signed by"
        )
    try:
        return ServerTls.from_files(certfile, keyfile, ca_certfile if require else None)
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from exc


def _app_tls(values: Values, tls: ServerTls | None, isolation: str) -> AppTls | None:
    """What the flwr-serverapp processes it starts need to reach ServerAppIo."""
    if tls is None:
        return None
    roots = values.optional("ssl-ca-certfile", Path) or values.get("ssl-certfile", Path)
    certfile = values.optional("app-client-certfile", Path)
    keyfile = values.optional("app-client-keyfile", Path)
    names = (values.label("app-client-certfile"), values.label("app-client-keyfile"))
    try:  # read once here, so that a bad file is a usage error before anything starts
        client = ClientTls.from_options(certfile, keyfile, names)
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from exc
    if not tls.mutual:
        return AppTls(roots)
    if client is None and isolation == "subprocess":
        raise UsageError(
            "--require-client-certificate in isolation subprocess needs --app-client-certfile "
            "and --app-client-keyfile: the client certificate of the flwr-serverapp processes "
            "the SuperLink starts"
        )
    return AppTls(roots, certfile, keyfile)


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


def _spare(values: Values, isolation: str) -> bool:
    """A spare app process in isolation subprocess, unless --no-spare-app-process."""
    return isolation == "subprocess" and not values.get("no-spare-app-process", bool)
