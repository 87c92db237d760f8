"""Entry point of ``flower-superlink``: parse config, build the SuperLink, serve until signalled."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from corolla.common.collector import SurvivorFreezer
from corolla.common.config import UsageError, write_ready_file
from corolla.common.errors import CorollaError
from corolla.superlink.config import SuperLinkConfig, parse_config
from corolla.superlink.link import SuperLink

log = logging.getLogger("corolla.superlink")

__all__ = ["SuperLinkConfig", "main", "parse_config"]


def main(argv: Sequence[str] | None = None) -> None:
    try:
        config = parse_config(argv)
    except UsageError as exc:
        print(f"flower-superlink: {exc}", file=sys.stderr)
        sys.exit(2)
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
    try:
        link = SuperLink(config)  # opens the state: a database it cannot use ends here
    except CorollaError as exc:
        print(f"flower-superlink: {exc}", file=sys.stderr)
        sys.exit(1)
    try:
        link.start()
        if config.ready_file is not None:
            write_ready_file(config.ready_file, {**link.addresses, "pid": os.getpid()})
    except (CorollaError, OSError) as exc:
        print(f"flower-superlink: {exc}", file=sys.stderr)
        link.stop()
        sys.exit(1)
    collector = SurvivorFreezer()  # no second-long collections with thousands of streams open
    collector.start()
    code = 0
    while not stop.wait(0.5):
        if link.error is not None:
            code = 1
            break
        if link.idle_expired():
            log.info("idle for %.0f s (--idle-timeout), shutting down", config.idle_timeout)
            break
    link.stop()
    collector.stop()
    if config.ready_file is not None:
        config.ready_file.unlink(missing_ok=True)  # a stale file would claim readiness
    if link.error is not None:
        log.critical("flower-superlink cannot go on: %s", link.error)
    sys.exit(code)


if __name__ == "__main__":
    main()
