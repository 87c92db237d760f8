"""The spare's side of `corolla.common.spare`: preload, wait for a run, become its process.

An app process started with ``COROLLA_APP_STANDBY=1`` calls `await_run` first thing in its
``main()``: it imports what a run will need and the entry module has not imported yet, then
reads one line from stdin, its assignment, puts the assignment's variables (the run token)
into its environment, points stdin at ``/dev/null`` (as for a process started for its run) and
returns; ``main()`` then goes on as in any app process. EOF instead of a line (the daemon
dropped the spare, or died) exits 0 at once; a malformed line exits 2 with one line on stderr.
Without the variable `await_run` returns at once.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from corolla.common.errors import InvalidArgument
from corolla.common.spare import MAX_ASSIGNMENT_BYTES, STANDBY_ENV, decode_assignment

# Imported lazily during a run (first channel, the user API facade, zip names, NumPy's random
# generators that apps often use); the entry modules import the rest at the top.
PRELOAD = (
    "grpc._channel",
    "grpc.experimental",
    "corolla.app",
    "corolla.common.typing",
    "encodings.cp437",
    "numpy.random",
)


def await_run(prog: str, preload: Sequence[str] = PRELOAD) -> None:
    """In a spare: preload, wait for the assignment and apply it (see the module doc)."""
    if os.environ.pop(STANDBY_ENV, "") != "1":
        return
    for name in preload:
        importlib.import_module(name)
    line = _read_line()
    if line is None:
        sys.exit(0)  # EOF: no run for this spare
    try:
        env = decode_assignment(line)
    except InvalidArgument as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        sys.exit(2)
    os.environ.update(env)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def _read_line() -> bytes | None:
    """One line from fd 0, without its newline (the daemon writes nothing after it), read
    unbuffered. None on EOF before a whole line (a daemon that died while writing dropped
    the spare too)."""
    data = b""
    while b"\n" not in data and len(data) <= MAX_ASSIGNMENT_BYTES:
        chunk = os.read(0, 4096)
        if not chunk:
            return None
        data += chunk
    return data.split(b"\n", 1)[0]
