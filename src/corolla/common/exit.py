"""Ending a command's process without the interpreter's last garbage collections.

At exit the interpreter clears every module and collects garbage, walking every object it
holds; with gRPC, protobuf, NumPy (and typer) loaded that takes about half a second of CPU
after the work is done: after each `flwr` command, and after each app process, whose exit
overlaps the next run's start. `exit_with` freezes the objects first (`gc.freeze`): those
collections skip them, objects are still freed by reference counting, buffered output is
flushed and atexit handlers run as on any exit. For a `main()` only.
"""

from __future__ import annotations

import gc
import sys
from typing import NoReturn


def exit_with(code: int) -> NoReturn:
    """``sys.exit(code)``, skipping the final collections of every object."""
    gc.freeze()
    sys.exit(code)
