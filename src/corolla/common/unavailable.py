"""Placeholder entry point for commands whose runtime has not landed yet."""

from __future__ import annotations

import sys


def not_yet_available(command: str) -> int:
    print(f"{command}: not yet available in this version of Corolla", file=sys.stderr)
    return 1
