"""App processes started by a daemon end when that daemon is gone."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

CHECK_INTERVAL = 0.5
_STARTED_BY = os.getppid()  # at import, early in the process: the daemon that started it


def exit_with_parent(name: str) -> None:
    """Exit (code 1) as soon as the process that started us is gone (we were re-parented),
    also when it went before this call (e.g. while a spare waited for its run)."""
    parent = _STARTED_BY

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(CHECK_INTERVAL)
        with contextlib.suppress(OSError):  # our output pipe may have died with the parent
            print(f"{name}: parent process gone, exiting", file=sys.__stderr__, flush=True)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
