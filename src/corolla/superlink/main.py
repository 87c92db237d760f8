"""Entry point of ``flower-superlink``: parse config, build the SuperLink, serve until signalled."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from corolla.common.appio import read_secret_file
from corolla.common.errors import CorollaError
from corolla.common.paths import corolla_home
from corolla.common.tls import ServerTls
from corolla.superlink.link import SuperLink, SuperLinkConfig

log = logging.getLogger("corolla.superlink")

EPILOG = """\
TLS: give --ssl-certfile and --ssl-keyfile to serve every API with TLS (--ssl-ca-certfile: the
CA that signed the certificate, handed to local flwr-serverapp processes), or --insecure to serve
without it. Isolation 'process': flwr-serverapp processes are started by the operator and attach
with the secret in --appio-secret-file (same file, or COROLLA_APPIO_SECRET, on their side).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flower-superlink",
        description="Serve the ServerAppIo, Fleet and Exec APIs of a Corolla federation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--serverappio-api-address", default="0.0.0.0:9091")
    parser.add_argument("--fleet-api-address", default="0.0.0.0:9092")
    parser.add_argument("--exec-api-address", default="0.0.0.0:9093")
    parser.add_argument(
        "--database",
        default=str(corolla_home() / "superlink" / "state.db"),
        help="SQLite file for runs, messages, logs (':memory:' keeps nothing). "
        "Default: $COROLLA_HOME/superlink/state.db",
    )
    parser.add_argument("--insecure", action="store_true", help="serve without TLS")
    parser.add_argument("--ssl-certfile", type=Path, help="server certificate (PEM)")
    parser.add_argument("--ssl-keyfile", type=Path, help="server private key (PEM)")
    parser.add_argument("--ssl-ca-certfile", type=Path, help="CA certificate (PEM)")
    parser.add_argument("--isolation", choices=["subprocess", "process"], default="subprocess")
    parser.add_argument(
        "--appio-secret-file", type=Path, help="shared secret of attached app processes"
    )
    parser.add_argument(
        "--app-attach-timeout",
        type=float,
        default=300.0,
        help="isolation process: fail a run no flwr-serverapp picks up within this (s)",
    )
    parser.add_argument(
        "--app-heartbeat-timeout",
        type=float,
        default=15.0,
        help="isolation process: fail a run whose flwr-serverapp is silent this long (s)",
    )
    return parser


def parse_config(argv: list[str] | None = None) -> SuperLinkConfig:
    parser = _parser()
    args = parser.parse_args(argv)
    tls = None
    try:
        if args.insecure:
            if args.ssl_certfile or args.ssl_keyfile:
                parser.error("--insecure and --ssl-certfile/--ssl-keyfile exclude each other")
        elif args.ssl_certfile and args.ssl_keyfile:
            tls = ServerTls.from_files(args.ssl_certfile, args.ssl_keyfile)
        else:
            parser.error("give --ssl-certfile and --ssl-keyfile for TLS, or --insecure")
        secret = None
        if args.isolation == "process":
            if args.appio_secret_file is None:
                parser.error("--isolation process needs --appio-secret-file")
            secret = read_secret_file(args.appio_secret_file)
    except CorollaError as exc:
        parser.exit(2, f"flower-superlink: {exc}\n")
    return SuperLinkConfig(
        serverappio_address=args.serverappio_api_address,
        fleet_address=args.fleet_api_address,
        exec_address=args.exec_api_address,
        database=args.database,
        tls=tls,
        tls_root_certificates=args.ssl_ca_certfile or args.ssl_certfile,
        isolation=args.isolation,
        appio_secret=secret,
        app_attach_timeout=args.app_attach_timeout,
        app_heartbeat_timeout=args.app_heartbeat_timeout,
    )


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if config.tls is None:
        log.warning("insecure mode: the APIs are served without TLS; use only on a trusted network")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    link = SuperLink(config)
    try:
        link.start()
    except CorollaError as exc:
        print(f"flower-superlink: {exc}", file=sys.stderr)
        link.stop()
        sys.exit(1)
    code = 0
    while not stop.wait(0.5):
        if link.error is not None:
            code = 1
            break
    link.stop()
    sys.exit(code)


if __name__ == "__main__":
    main()
