"""Entry point of `flwr-serverapp`."""

from __future__ import annotations

import sys

from corolla.common.unavailable import not_yet_available


def main() -> None:
    sys.exit(not_yet_available("flwr-serverapp"))
