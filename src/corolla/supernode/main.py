"""Entry point of `flower-supernode`: parse the config, build the node, run until signalled."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from corolla.common.errors import CorollaError
from corolla.supernode.config import UsageError, parse_args
from corolla.supernode.node import SuperNode

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        config = parse_args(argv)
    except UsageError as exc:
        print(f"flower-supernode: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if config.insecure:
        log.warning(
            "connecting to the SuperLink at %s and serving ClientAppIo without TLS "
            "(--insecure): traffic is not encrypted; use this for local testing only",
            config.superlink,
        )
    try:
        node = SuperNode(config)
    except CorollaError as exc:
        print(f"flower-supernode: {exc}", file=sys.stderr)
        sys.exit(1)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        node.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.start()
    while not node.wait(1.0):
        pass
    log.info("stopping the SuperNode")
    node.stop()
    sys.exit(1 if node.failure is not None else 0)


if __name__ == "__main__":
    main()
