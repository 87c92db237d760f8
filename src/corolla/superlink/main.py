"""Entry point of ``flower-superlink``: parse config, build the SuperLink, serve until signalled."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from corolla.common.errors import CorollaError
from corolla.common.paths import corolla_home
from corolla.superlink.link import SuperLink, SuperLinkConfig

log = logging.getLogger("corolla.superlink")


def parse_config(argv: list[str] | None = None) -> SuperLinkConfig:
    parser = argparse.ArgumentParser(
        prog="flower-superlink",
        description="Serve the ServerAppIo, Fleet and Exec APIs of a Corolla federation.",
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
    parser.add_argument(
        "--insecure", action="store_true", help="serve without TLS (required for now)"
    )
    parser.add_argument("--isolation", choices=["subprocess"], default="subprocess")
    args = parser.parse_args(argv)
    if not args.insecure:
        parser.exit(
            2, "flower-superlink: TLS is not available yet; pass --insecure to serve without it\n"
        )
    return SuperLinkConfig(
        serverappio_address=args.serverappio_api_address,
        fleet_address=args.fleet_api_address,
        exec_address=args.exec_api_address,
        database=args.database,
        insecure=args.insecure,
    )


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
        if link.launcher is not None and link.launcher.error is not None:
            code = 1
            break
    link.stop()
    sys.exit(code)


if __name__ == "__main__":
    main()
