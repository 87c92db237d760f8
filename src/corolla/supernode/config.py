"""`flower-supernode` configuration: parsed once from the command line into `SuperNodeConfig`.

Precedence: a flag wins over its default. Files named by flags (TLS material, the AppIo secret)
are read here, once, so that a bad path is a usage error before anything starts.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from corolla.common.appio import read_secret_file
from corolla.common.errors import InvalidArgument
from corolla.common.kvpairs import split_pairs
from corolla.common.tls import ServerTls, read_root_certificates
from corolla.records import UserConfig

DEFAULT_SUPERLINK = "127.0.0.1:9092"
DEFAULT_CLIENTAPPIO = "0.0.0.0:9094"
DEFAULT_HEARTBEAT = 5.0
DEFAULT_MAX_WAIT = 10.0
DEFAULT_APP_ATTACH_TIMEOUT = 120.0
DEFAULT_APP_HEARTBEAT_TIMEOUT = 5.0
MIN_APP_HEARTBEAT_TIMEOUT = 2.0  # flwr-clientapp sends a heartbeat every second
MAX_WAIT_LIMIT = 30.0  # the SuperLink caps a long poll at this many seconds
ISOLATIONS = ("subprocess", "process")

T = TypeVar("T")


@dataclass(frozen=True)
class SuperNodeConfig:
    """Everything a SuperNode needs to run, validated.

    ``insecure``: no TLS anywhere (Fleet connection and ClientAppIo API). Otherwise the Fleet
    connection uses TLS (``root_certificates`` or the system roots) and ClientAppIo is served
    with ``clientappio_tls``. ``appio_secret`` (isolation ``process``) lets external
    `flwr-clientapp` processes ask for work; in isolation ``subprocess`` it stays None and the
    node makes a random one nobody knows.
    """

    superlink: str = DEFAULT_SUPERLINK
    insecure: bool = True
    root_certificates: bytes | None = field(default=None, repr=False)
    clientappio_address: str = DEFAULT_CLIENTAPPIO
    clientappio_tls: ServerTls | None = field(default=None, repr=False)
    node_config: UserConfig = field(default_factory=dict)
    isolation: str = "subprocess"
    appio_secret: str | None = field(default=None, repr=False)
    heartbeat_interval: float = DEFAULT_HEARTBEAT
    max_wait: float = DEFAULT_MAX_WAIT
    app_attach_timeout: float = DEFAULT_APP_ATTACH_TIMEOUT
    app_heartbeat_timeout: float = DEFAULT_APP_HEARTBEAT_TIMEOUT


class UsageError(InvalidArgument):
    """The command line is wrong; `main` prints the message on one line and exits with 2."""


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flower-supernode",
        description="Run a SuperNode: connect to a SuperLink and run ClientApps for its runs.",
    )
    parser.add_argument(
        "--superlink",
        default=DEFAULT_SUPERLINK,
        metavar="HOST:PORT",
        help="the SuperLink's Fleet API (default: %(default)s)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="no TLS at all: plaintext to the SuperLink and on the ClientAppIo API "
        "(local testing only)",
    )
    parser.add_argument(
        "--root-certificates",
        type=Path,
        metavar="PATH",
        help="PEM CA certificates to verify the SuperLink (default: the system roots)",
    )
    parser.add_argument(
        "--ssl-certfile",
        type=Path,
        metavar="PATH",
        help="PEM certificate chain of the ClientAppIo API (required without --insecure)",
    )
    parser.add_argument(
        "--ssl-keyfile",
        type=Path,
        metavar="PATH",
        help="PEM private key of the ClientAppIo API (required without --insecure)",
    )
    parser.add_argument(
        "--clientappio-api-address",
        default=DEFAULT_CLIENTAPPIO,
        metavar="HOST:PORT",
        help="where flwr-clientapp processes reach this SuperNode (default: %(default)s)",
    )
    parser.add_argument(
        "--node-config",
        default="",
        metavar="PAIRS",
        help="node settings for the apps, e.g. \"partition-id=0 data-dir='/data'\"",
    )
    parser.add_argument(
        "--isolation",
        default="subprocess",
        choices=ISOLATIONS,
        help="subprocess: the SuperNode starts a flwr-clientapp per run; process: "
        "flwr-clientapp processes are started by the operator and attach over ClientAppIo",
    )
    parser.add_argument(
        "--appio-secret-file",
        type=Path,
        metavar="PATH",
        help="file holding the secret flwr-clientapp processes must present to ask for work "
        "(required with --isolation process)",
    )
    parser.add_argument(
        "--app-attach-timeout",
        type=float,
        default=DEFAULT_APP_ATTACH_TIMEOUT,
        metavar="SECONDS",
        help="isolation process: a message waiting this long with no flwr-clientapp attached "
        "gets an error reply (default: %(default)g)",
    )
    parser.add_argument(
        "--app-heartbeat-timeout",
        type=float,
        default=DEFAULT_APP_HEARTBEAT_TIMEOUT,
        metavar="SECONDS",
        help="isolation process: an attached flwr-clientapp silent this long is considered "
        "dead and its message gets an error reply (default: %(default)g)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=DEFAULT_HEARTBEAT,
        metavar="SECONDS",
        help="seconds between heartbeats to the SuperLink (default: %(default)g)",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=DEFAULT_MAX_WAIT,
        metavar="SECONDS",
        help="long-poll seconds on the Fleet API (default: %(default)g)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> SuperNodeConfig:
    """Parse and validate the command line; raises `UsageError` with a one-line reason."""
    args = _parser().parse_args(argv)
    if not 0.05 <= args.heartbeat_interval <= 3600:
        raise UsageError("flower-supernode: --heartbeat-interval must be in [0.05, 3600] s")
    if not 0 < args.max_wait <= MAX_WAIT_LIMIT:
        raise UsageError(f"flower-supernode: --max-wait must be in (0, {MAX_WAIT_LIMIT:g}] s")
    if not 0 < args.app_attach_timeout <= 86400:
        raise UsageError("flower-supernode: --app-attach-timeout must be in (0, 86400] s")
    if not MIN_APP_HEARTBEAT_TIMEOUT <= args.app_heartbeat_timeout <= 3600:
        raise UsageError(
            f"flower-supernode: --app-heartbeat-timeout must be in "
            f"[{MIN_APP_HEARTBEAT_TIMEOUT:g}, 3600] s"
        )
    for flag, address in (
        ("--superlink", args.superlink),
        ("--clientappio-api-address", args.clientappio_api_address),
    ):
        _check_address(flag, address)
    clientappio_tls = _clientappio_tls(args)  # checks the TLS flags go together first
    return SuperNodeConfig(
        superlink=args.superlink,
        insecure=args.insecure,
        root_certificates=_read(read_root_certificates, args.root_certificates),
        clientappio_address=args.clientappio_api_address,
        clientappio_tls=clientappio_tls,
        node_config=parse_node_config(args.node_config),
        isolation=args.isolation,
        appio_secret=_appio_secret(args),
        heartbeat_interval=args.heartbeat_interval,
        max_wait=args.max_wait,
        app_attach_timeout=args.app_attach_timeout,
        app_heartbeat_timeout=args.app_heartbeat_timeout,
    )


def _clientappio_tls(args: argparse.Namespace) -> ServerTls | None:
    given = [
        flag
        for flag, value in (
            ("--ssl-certfile", args.ssl_certfile),
            ("--ssl-keyfile", args.ssl_keyfile),
        )
        if value is not None
    ]
    if args.insecure:
        extra = given + (["--root-certificates"] if args.root_certificates else [])
        if extra:
            raise UsageError(
                f"flower-supernode: --insecure means no TLS; drop {' and '.join(extra)} "
                "or --insecure"
            )
        return None
    if len(given) < 2:
        raise UsageError(
            "flower-supernode: the ClientAppIo API needs TLS: pass --ssl-certfile PATH and "
            "--ssl-keyfile PATH (or --insecure for local testing without any TLS)"
        )
    try:
        return ServerTls.from_files(args.ssl_certfile, args.ssl_keyfile)
    except InvalidArgument as exc:
        raise UsageError(f"flower-supernode: {exc}") from exc


def _appio_secret(args: argparse.Namespace) -> str | None:
    if args.isolation == "subprocess":
        if args.appio_secret_file is not None:
            raise UsageError(
                "flower-supernode: --appio-secret-file applies to --isolation process only"
            )
        return None
    if args.appio_secret_file is None:
        raise UsageError(
            "flower-supernode: --isolation process requires --appio-secret-file PATH "
            "(the secret flwr-clientapp processes present to ask for work)"
        )
    return _read(read_secret_file, args.appio_secret_file)


def _read(reader: Callable[[Path], T], path: Path | None) -> T | None:
    if path is None:
        return None
    try:
        return reader(path)
    except InvalidArgument as exc:
        raise UsageError(f"flower-supernode: {exc}") from exc


def _check_address(flag: str, address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"flower-supernode: {flag} must be HOST:PORT, got {address!r}")


def local_address(bound: str, port: int) -> str:
    """How a process on this machine reaches a server bound to ``bound`` on ``port``."""
    host = bound.rpartition(":")[0]
    if host in ("", "0.0.0.0", "[::]", "::", "*"):
        host = "127.0.0.1"
    return f"{host}:{port}"
