"""`exit_with`: the exit code, buffered output and atexit handlers as with `sys.exit`."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import atexit, gc, sys
from corolla.common.exit import exit_with
atexit.register(lambda: print("atexit ran, frozen:", gc.get_freeze_count() > 0))
sys.stdout.write("buffered, no newline; ")
exit_with(int(sys.argv[1]))
"""


def test_exit_with_keeps_what_sys_exit_does() -> None:
    for code in (0, 3):
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(code)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == code
        assert result.stdout == "buffered, no newline; atexit ran, frozen: True\n"
        assert result.stderr == ""
