"""`flower-supernode` configuration: parsed once into `SuperNodeConfig`.

Precedence: flag > ``COROLLA_*`` environment variable > ``--config`` file (table
``[supernode]``) > default (`corolla.common.config`). Files named by options (TLS material, the
AppIo secret) are read here, once, so that a bad path is a usage error before anything starts.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from corolla.common.appenv import env_names
from corolla.common.appio import read_secret_file
from corolla.common.compression import MIN_SAVING, NONE, SETTINGS
from corolla.common.config import Command, Option, UsageError, Values, address, duration
from corolla.common.config import path as path_value
from corolla.common.errors import InvalidArgument
from corolla.common.kvpairs import split_pairs
from corolla.common.nodekeys import PrivateKey, load_private_key
from corolla.common.paths import corolla_home
from corolla.common.protocol import MAX_HEARTBEAT_INTERVAL, MAX_LONG_POLL, MIN_HEARTBEAT_INTERVAL
from corolla.common.tls import AppTls, ClientTls, ServerTls, read_root_certificates
from corolla.records import UserConfig

DEFAULT_SUPERLINK = "127.0.0.1:9092"
DEFAULT_CLIENTAPPIO = "0.0.0.0:9094"
LOOPBACK_CLIENTAPPIO = "127.0.0.1:9094"  # the default with --insecure
DEFAULT_HEARTBEAT = 5.0
DEFAULT_MAX_WAIT = 10.0
DEFAULT_APP_ATTACH_TIMEOUT = 120.0
DEFAULT_APP_HEARTBEAT_TIMEOUT = 5.0
MIN_APP_HEARTBEAT_TIMEOUT = 2.0  # flwr-clientapp sends a heartbeat every second
ISOLATIONS = ("subprocess", "process")
PULL_MODES = ("stream", "poll")

T = TypeVar("T")

__all__ = [
    "SuperNodeConfig",
    "UsageError",
    "command",
    "default_node_id_file",
    "local_address",
    "parse_args",
    "parse_node_config",
]


@dataclass(frozen=True)
class SuperNodeConfig:
    """Everything a SuperNode needs to run, validated.

    ``insecure``: no TLS anywhere (Fleet connection and ClientAppIo API). Otherwise the Fleet
    connection uses TLS (``root_certificates`` or the system roots; ``client_tls``: the node's
    client certificate, for a SuperLink that requires one) and ClientAppIo is served with
    ``clientappio_tls`` (mutual TLS when it has a client CA; its own app processes then connect
    with ``app_tls``). ``appio_secret`` (isolation ``process``) lets external
    `flwr-clientapp` processes ask for work; in isolation ``subprocess`` it stays None and the
    node makes a random one nobody knows.
    """

    superlink: str = DEFAULT_SUPERLINK
    insecure: bool = True
    root_certificates: bytes | None = field(default=None, repr=False)
    client_tls: ClientTls | None = field(default=None, repr=False)
    clientappio_address: str = DEFAULT_CLIENTAPPIO
    clientappio_tls: ServerTls | None = field(default=None, repr=False)
    # mutual TLS on ClientAppIo, isolation subprocess: what its flwr-clientapp processes get.
    app_tls: AppTls | None = None
    node_config: UserConfig = field(default_factory=dict)
    isolation: str = "subprocess"
    appio_secret: str | None = field(default=None, repr=False)
    heartbeat_interval: float = DEFAULT_HEARTBEAT
    # stream: one open Fleet.Connect stream; poll: PullMessages long polls of ``max_wait`` s
    pull_mode: str = "stream"
    max_wait: float = DEFAULT_MAX_WAIT
    app_attach_timeout: float = DEFAULT_APP_ATTACH_TIMEOUT
    app_heartbeat_timeout: float = DEFAULT_APP_HEARTBEAT_TIMEOUT
    # Where the node keeps the id the SuperLink gave it, to ask for it again after a restart
    # (None: no id is kept; `main` fills in a default under $COROLLA_HOME).
    node_id_file: Path | None = None
    # Once registered and listening, write {"node_id": N, "clientappio": "host:port"} here.
    ready_file: Path | None = None
    # isolation subprocess: variables of its environment passed on to its flwr-clientapp
    # processes besides the allow-list of `corolla.common.appenv` (--app-env).
    app_env: tuple[str, ...] = ()
    # isolation subprocess: keep a spare flwr-clientapp process, imported and waiting, for the
    # next run (`corolla.common.spare`); off with --no-spare-app-process.
    spare_app_process: bool = True
    # SuperNode authentication: every Fleet request is signed with this key.
    auth_private_key: PrivateKey | None = field(default=None, repr=False)
    # Compress object chunks it sends (pushes to the SuperLink, ClientAppIo pulls) toward
    # receivers that accept it: "none" or "zstd" (`corolla.common.compression`).
    compression: str = NONE


def parse_node_config(text: str) -> UserConfig:
    """``"key=value key2='str'"`` -> dict; each value is a TOML value (bare words are strings).

    Pairs are separated by whitespace outside quotes; quotes stay part of the value so that
    ``k='1'`` is the string ``"1"`` and ``k=1`` the integer 1.
    """
    config: UserConfig = {}
    try:
        pairs = split_pairs(text, "--node-config")
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from None
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key or not raw:
            raise UsageError(f"--node-config: expected key=value, got {pair!r}")
        config[key] = _toml_value(key, raw)
    return config


def _toml_value(key: str, raw: str) -> int | float | str | bool:
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if raw[0] in "'\"":
            raise UsageError(f"--node-config: {key}: invalid quoted value {raw}") from None
        return raw  # a bare word such as `mnist`
    if not isinstance(value, bool | int | float | str):
        raise UsageError(
            f"--node-config: {key}: only int, float, str or bool values are allowed, "
            f"got {type(value).__name__}"
        )
    return value


def command() -> Command:
    return Command(
        prog="flower-supernode",
        table="supernode",
        description="Run a SuperNode: connect to a SuperLink and run ClientApps for its runs.",
        options=(
            Option(
                "--superlink", "the SuperLink's Fleet API", DEFAULT_SUPERLINK, address, "HOST:PORT"
            ),
            Option(
                "--insecure",
                "no TLS at all: plaintext to the SuperLink and on the ClientAppIo API "
                "(local testing only)",
                switch=True,
            ),
            Option(
                "--root-certificates",
                "PEM CA certificates to verify the SuperLink (default: the system roots)",
                parse=path_value,
                metavar="PATH",
            ),
            Option(
                "--ssl-certfile",
                "PEM certificate chain of the ClientAppIo API (required without --insecure)",
                parse=path_value,
                metavar="PATH",
            ),
            Option(
                "--ssl-keyfile",
                "PEM private key of the ClientAppIo API (required without --insecure)",
                parse=path_value,
                metavar="PATH",
            ),
            Option(
                "--ssl-ca-certfile",
                "PEM CA certificate of the ClientAppIo certificate, trusted by the "
                "flwr-clientapp processes this SuperNode starts; with "
                "--require-client-certificate, client certificates must be signed by it too",
                parse=path_value,
                metavar="PATH",
            ),
            Option(
                "--require-client-certificate",
                "mutual TLS on the ClientAppIo API: demand a client certificate signed by "
                "--ssl-ca-certfile",
                switch=True,
            ),
            Option(
                "--ssl-client-certfile",
                "PEM client certificate this SuperNode presents to the SuperLink's Fleet API "
                "(for a SuperLink with --require-client-certificate)",
                parse=path_value,
                metavar="PATH",
            ),
            Option(
                "--ssl-client-keyfile",
                "PEM private key of --ssl-client-certfile",
                parse=path_value,
                metavar="PATH",
            ),
            Option(
                "--app-client-certfile",
                "PEM client certificate of the flwr-clientapp processes this SuperNode starts "
                "(isolation subprocess with --require-client-certificate; handed over by path)",
                parse=path_value,
                metavar="PATH",
            ),
            Option(
                "--app-client-keyfile",
                "PEM private key of --app-client-certfile (handed over by path)",
                parse=path_value,
                metavar="PATH",
            ),
            Option(
                "--auth-supernode-private-key",
                "ECDSA P-256 or Ed25519 private key (PEM or OpenSSH) to sign Fleet requests "
                "with (a SuperLink with --enable-supernode-auth requires it)",
                parse=path_value,
                metavar="PATH",
            ),
            Option(
                "--clientappio-api-address",
                "where flwr-clientapp processes reach this SuperNode (with --insecure the "
                f"default is {LOOPBACK_CLIENTAPPIO})",
                DEFAULT_CLIENTAPPIO,
                address,
                "HOST:PORT",
            ),
            Option(
                "--node-config",
                "node settings for the apps, e.g. \"partition-id=0 data-dir='/data'\"",
                "",
                metavar="PAIRS",
            ),
            Option(
                "--isolation",
                "subprocess: the SuperNode starts a flwr-clientapp per run; process: "
                "flwr-clientapp processes are started by the operator and attach over ClientAppIo",
                "subprocess",
                choices=ISOLATIONS,
            ),
            Option(
                "--appio-secret-file",
                "file holding the secret flwr-clientapp processes must present to ask for work "
                "(required with --isolation process)",
                parse=path_value,
                metavar="PATH",
            ),
            Option(
                "--app-attach-timeout",
                "isolation process: a message waiting this long with no flwr-clientapp attached "
                "gets an error reply",
                DEFAULT_APP_ATTACH_TIMEOUT,
                duration,
                "SECONDS",
            ),
            Option(
                "--app-heartbeat-timeout",
                "isolation process: an attached flwr-clientapp silent this long is considered "
                "dead and its message gets an error reply",
                DEFAULT_APP_HEARTBEAT_TIMEOUT,
                duration,
                "SECONDS",
            ),
            Option(
                "--heartbeat-interval",
                "seconds between heartbeats to the SuperLink",
                DEFAULT_HEARTBEAT,
                duration,
                "SECONDS",
            ),
            Option(
                "--pull-mode",
                "stream: work comes down one open stream to the SuperLink as soon as it exists; "
                "poll: long polls of --max-wait seconds, each one call (for a proxy that cuts "
                "long-lived streams)",
                "stream",
                choices=PULL_MODES,
            ),
            Option(
                "--max-wait",
                "--pull-mode poll: long-poll seconds on the Fleet API",
                DEFAULT_MAX_WAIT,
                duration,
                "SECONDS",
            ),
            Option(
                "--app-env",
                "isolation subprocess: pass this variable of the SuperNode's environment on to "
                "its flwr-clientapp processes too (repeatable, or NAME,NAME; the others but an "
                "allow-list stay behind)",
                parse=env_names,
                metavar="NAME",
                repeat=True,
            ),
            Option(
                "--no-spare-app-process",
                "isolation subprocess: keep no spare flwr-clientapp process ready for the next "
                "run (by default one waits, imported, so that a run's first message does not "
                "wait for an interpreter to start)",
                switch=True,
            ),
            Option(
                "--compression",
                "compress the object chunks it sends (pushes to the SuperLink, its ClientApps' "
                "pulls) toward receivers that accept it, each chunk only where that saves at "
                f"least {MIN_SAVING:.0%}",
                NONE,
                choices=SETTINGS,
            ),
            Option(
                "--node-id-file",
                "where the node keeps its id to ask for it again after a restart (default: "
                "$COROLLA_HOME/supernode/<hash of the addresses>.node-id; none with ClientAppIo "
                "port 0)",
                parse=path_value,
                metavar="PATH",
                env=False,  # one per process: a shared variable would collide
            ),
            Option(
                "--ready-file",
                "once registered, write the node id, ClientAppIo address and pid here (JSON)",
                parse=path_value,
                metavar="PATH",
                env=False,  # one per process: a shared variable would collide
            ),
        ),
    )


def parse_args(
    argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> SuperNodeConfig:
    """Parse and validate flags, environment and config file; raises `UsageError`."""
    values = command().parse(argv, environ=environ)
    _check_ranges(values)
    superlink = values.get("superlink", str)
    insecure = values.get("insecure", bool)
    clientappio = values.get("clientappio-api-address", str)
    if insecure and not values.given("clientappio-api-address"):
        clientappio = LOOPBACK_CLIENTAPPIO  # without TLS, stay on this machine unless told
    isolation = values.get("isolation", str)
    root_certificates = values.optional("root-certificates", Path)
    clientappio_tls = _clientappio_tls(values)  # checks the TLS flags go together first
    node_id_file = values.optional("node-id-file", Path)
    return SuperNodeConfig(
        superlink=superlink,
        insecure=insecure,
        root_certificates=_read(read_root_certificates, root_certificates),
        client_tls=_client_tls(values, "ssl-client-certfile", "ssl-client-keyfile"),
        clientappio_address=clientappio,
        clientappio_tls=clientappio_tls,
        app_tls=_app_tls(values, clientappio_tls, isolation),
        node_config=parse_node_config(values.get("node-config", str)),
        isolation=isolation,
        appio_secret=_appio_secret(isolation, values.optional("appio-secret-file", Path)),
        heartbeat_interval=values.get("heartbeat-interval", float),
        pull_mode=values.get("pull-mode", str),
        max_wait=values.get("max-wait", float),
        app_attach_timeout=values.get("app-attach-timeout", float),
        app_heartbeat_timeout=values.get("app-heartbeat-timeout", float),
        node_id_file=node_id_file or default_node_id_file(superlink, clientappio),
        ready_file=values.optional("ready-file", Path),
        app_env=values.optional("app-env", tuple) or (),
        spare_app_process=_spare(values, isolation),
        auth_private_key=_read(
            load_private_key, values.optional("auth-supernode-private-key", Path)
        ),
        compression=values.get("compression", str),
    )


def default_node_id_file(superlink: str, clientappio: str) -> Path | None:
    """``$COROLLA_HOME/supernode/<hash>.node-id`` for this pair of addresses; None when the
    ClientAppIo port is 0 (a fresh port each start: nothing identifies the node)."""
    if clientappio.rpartition(":")[2] == "0":
        return None
    digest = hashlib.sha256(f"{superlink}|{clientappio}".encode()).hexdigest()[:16]
    return corolla_home() / "supernode" / f"{digest}.node-id"


def _check_ranges(values: Values) -> None:
    ranges = (
        ("heartbeat-interval", MIN_HEARTBEAT_INTERVAL, MAX_HEARTBEAT_INTERVAL, "["),
        ("max-wait", 0.0, MAX_LONG_POLL, "("),
        ("app-attach-timeout", 0.0, 86400.0, "("),
        ("app-heartbeat-timeout", MIN_APP_HEARTBEAT_TIMEOUT, 3600.0, "["),
    )
    for name, low, high, bracket in ranges:
        value = values.get(name, float)
        if not low <= value <= high:
            raise UsageError(f"{values.label(name)} must be in {bracket}{low:g}, {high:g}] s")


def _clientappio_tls(values: Values) -> ServerTls | None:
    certfile = values.optional("ssl-certfile", Path)
    keyfile = values.optional("ssl-keyfile", Path)
    given = [
        flag
        for flag, value in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile))
        if value is not None
    ]
    if values.get("insecure", bool):
        extra = given + [f"--{name}" for name in _TLS_ONLY if values.given(name)]
        if extra:
            raise UsageError(f"--insecure means no TLS; drop {' and '.join(extra)} or --insecure")
        return None
    if certfile is None or keyfile is None:
        raise UsageError(
            "the ClientAppIo API needs TLS: pass --ssl-certfile PATH and "
            "--ssl-keyfile PATH (or --insecure for local testing without any TLS)"
        )
    require = values.get("require-client-certificate", bool)
    ca_certfile = values.optional("ssl-ca-certfile", Path)
    if require and ca_certfile is None:
        raise UsageError(
            f"{values.label('require-client-certificate')} needs --ssl-ca-certfile: the CA "
            "that client certificates must be signed by"
        )
    try:
        return ServerTls.from_files(certfile, keyfile, ca_certfile if require else None)
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from exc


_TLS_ONLY = (
    "root-certificates",
    "ssl-ca-certfile",
    "require-client-certificate",
    "ssl-client-certfile",
    "ssl-client-keyfile",
    "app-client-certfile",
    "app-client-keyfile",
)


def _client_tls(values: Values, certfile: str, keyfile: str) -> ClientTls | None:
    names = (values.label(certfile), values.label(keyfile))
    try:
        return ClientTls.from_options(
            values.optional(certfile, Path), values.optional(keyfile, Path), names
        )
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from exc


def _app_tls(values: Values, tls: ServerTls | None, isolation: str) -> AppTls | None:
    """Mutual TLS, isolation subprocess: the CA and client certificate its children get.

    (With plain TLS the children get a plaintext port on loopback instead, see `node.py`.)
    """
    client = _client_tls(values, "app-client-certfile", "app-client-keyfile")
    if tls is None or not tls.mutual or isolation != "subprocess":
        return None
    if client is None:
        raise UsageError(
            "--require-client-certificate in isolation subprocess needs --app-client-certfile "
            "and --app-client-keyfile: the client certificate of the flwr-clientapp processes "
            "the SuperNode starts"
        )
    return AppTls(
        values.get("ssl-ca-certfile", Path),
        values.optional("app-client-certfile", Path),
        values.optional("app-client-keyfile", Path),
    )


def _appio_secret(isolation: str, secret_file: Path | None) -> str | None:
    if isolation == "subprocess":
        if secret_file is not None:
            raise UsageError("--appio-secret-file applies to --isolation process only")
        return None
    if secret_file is None:
        raise UsageError(
            "--isolation process requires --appio-secret-file PATH "
            "(the secret flwr-clientapp processes present to ask for work)"
        )
    return _read(read_secret_file, secret_file)


def _read(reader: Callable[[Path], T], path: Path | None) -> T | None:
    if path is None:
        return None
    try:
        return reader(path)
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from exc


def local_address(bound: str, port: int) -> str:
    """How a process on this machine reaches a server bound to ``bound`` on ``port``."""
    host = bound.rpartition(":")[0]
    if host in ("", "0.0.0.0", "[::]", "::", "*"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def _spare(values: Values, isolation: str) -> bool:
    """A spare app process in isolation subprocess, unless --no-spare-app-process."""
    return isolation == "subprocess" and not values.get("no-spare-app-process", bool)
