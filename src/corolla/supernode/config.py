"""`flower-supernode` configuration: parsed once from the command line into `SuperNodeConfig`.

Precedence: a flag wins over its default. (Environment and config-file sources arrive with TLS.)
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field

from corolla.common.errors import InvalidArgument
from corolla.records import UserConfig

DEFAULT_SUPERLINK = "127.0.0.1:9092"
DEFAULT_CLIENTAPPIO = "0.0.0.0:9094"
DEFAULT_HEARTBEAT = 5.0
DEFAULT_MAX_WAIT = 10.0
MAX_WAIT_LIMIT = 30.0  # the SuperLink caps a long poll at this many seconds
ISOLATIONS = ("subprocess", "process")

INSECURE_REQUIRED = (
    "flower-supernode: TLS is not available yet in this version of Corolla; "
    "pass --insecure to connect without encryption (local testing only)"
)


@dataclass(frozen=True)
class SuperNodeConfig:
    """Everything a SuperNode needs to run, validated."""

    superlink: str = DEFAULT_SUPERLINK
    insecure: bool = True
    root_certificates: bytes | None = None  # TLS to the SuperLink (arrives later)
    clientappio_address: str = DEFAULT_CLIENTAPPIO
    node_config: UserConfig = field(default_factory=dict)
    isolation: str = "subprocess"
    heartbeat_interval: float = DEFAULT_HEARTBEAT
    max_wait: float = DEFAULT_MAX_WAIT


class UsageError(InvalidArgument):
    """The command line is wrong; `main` prints the message on one line and exits with 2."""


def parse_node_config(text: str) -> UserConfig:
    """``"key=value key2='str'"`` -> dict; each value is a TOML value (bare words are strings).

    Pairs are separated by whitespace outside quotes; quotes stay part of the value so that
    ``k='1'`` is the string ``"1"`` and ``k=1`` the integer 1.
    """
    config: UserConfig = {}
    for pair in _split_pairs(text):
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key or not raw:
            raise UsageError(f"--node-config: expected key=value, got {pair!r}")
        config[key] = _toml_value(key, raw)
    return config


def _split_pairs(text: str) -> list[str]:
    """Split on whitespace outside single/double quotes, keeping the quotes (shell-like)."""
    pairs: list[str] = []
    current: list[str] = []
    quote = ""
    escaped = False
    for char in text:
        if quote:
            current.append(char)
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char.isspace():
            if current:
                pairs.append("".join(current))
                current = []
        else:
            current.append(char)
    if quote:
        raise UsageError(f"--node-config: unterminated quote in {text!r}")
    if current:
        pairs.append("".join(current))
    return pairs


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
    parser.add_argument("--superlink", default=DEFAULT_SUPERLINK, help="Fleet API HOST:PORT")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="connect without TLS (required until TLS is available; local testing only)",
    )
    parser.add_argument(
        "--clientappio-api-address",
        default=DEFAULT_CLIENTAPPIO,
        help="HOST:PORT where ClientApp processes reach this SuperNode",
    )
    parser.add_argument(
        "--node-config",
        default="",
        help="node settings for the apps, e.g. \"partition-id=0 data-dir='/data'\"",
    )
    parser.add_argument("--isolation", default="subprocess", choices=ISOLATIONS)
    parser.add_argument(
        "--heartbeat-interval", type=float, default=DEFAULT_HEARTBEAT, help="seconds"
    )
    parser.add_argument(
        "--max-wait", type=float, default=DEFAULT_MAX_WAIT, help="long-poll seconds"
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> SuperNodeConfig:
    """Parse and validate the command line; raises `UsageError` with a one-line reason."""
    args = _parser().parse_args(argv)
    if not args.insecure:
        raise UsageError(INSECURE_REQUIRED)
    if args.isolation == "process":
        raise UsageError(
            "flower-supernode: --isolation process is not available yet; use --isolation subprocess"
        )
    if not 0.05 <= args.heartbeat_interval <= 3600:
        raise UsageError("flower-supernode: --heartbeat-interval must be in [0.05, 3600] s")
    if not 0 < args.max_wait <= MAX_WAIT_LIMIT:
        raise UsageError(f"flower-supernode: --max-wait must be in (0, {MAX_WAIT_LIMIT:g}] s")
    for flag, address in (
        ("--superlink", args.superlink),
        ("--clientappio-api-address", args.clientappio_api_address),
    ):
        _check_address(flag, address)
    return SuperNodeConfig(
        superlink=args.superlink,
        insecure=True,
        clientappio_address=args.clientappio_api_address,
        node_config=parse_node_config(args.node_config),
        isolation=args.isolation,
        heartbeat_interval=args.heartbeat_interval,
        max_wait=args.max_wait,
    )


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
