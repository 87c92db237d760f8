"""Capture an app process's stdout, stderr and logging and forward them in batches."""

from __future__ import annotations

import io
import logging
import queue
import sys
import threading
from collections.abc import Callable
from typing import TextIO

Push = Callable[[list[str]], None]

_BATCH = 200


class _LineWriter(io.TextIOBase):
    """A text stream that copies complete lines into a queue and passes writes through."""

    def __init__(self, lines: queue.SimpleQueue[str], passthrough: TextIO) -> None:
        self._lines = lines
        self._passthrough = passthrough
        self._partial = ""

    def write(self, text: str) -> int:
        self._passthrough.write(text)
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            self._lines.put(line)
        return len(text)

    def flush(self) -> None:
        self._passthrough.flush()

    def drain_partial(self) -> None:
        if self._partial:
            self._lines.put(self._partial)
            self._partial = ""


class _QueueHandler(logging.Handler):
    def __init__(self, lines: queue.SimpleQueue[str]) -> None:
        super().__init__()
        self._lines = lines
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            for line in self.format(record).splitlines():
                self._lines.put(line)
        except Exception:  # a broken record must not break the app
            self.handleError(record)


class LogForwarder:
    """While active, app output goes to the terminal as usual and also to ``push`` in batches.

    A failing ``push`` (the daemon is gone) is reported once on stderr and never raises.
    """

    def __init__(self, push: Push, interval: float = 0.1, prefix: str = "") -> None:
        self._push = push
        self._interval = interval
        self._prefix = prefix
        self._lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="log-forwarder", daemon=True)
        self._stdout = _LineWriter(self._lines, sys.stdout)
        self._stderr = _LineWriter(self._lines, sys.stderr)
        self._handler = _QueueHandler(self._lines)
        self._saved: tuple[TextIO, TextIO] | None = None
        self._failed = False

    def __enter__(self) -> LogForwarder:
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = self._stdout, self._stderr
        logging.getLogger().addHandler(self._handler)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self._handler)
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
        self._stdout.drain_partial()
        self._stderr.drain_partial()
        self._stop.set()
        self._thread.join(timeout=10)
        self._flush()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._flush()

    def _flush(self) -> None:
        while True:
            batch: list[str] = []
            while len(batch) < _BATCH:
                try:
                    batch.append(self._prefix + self._lines.get_nowait())
                except queue.Empty:
                    break
            if not batch:
                return
            try:
                self._push(batch)
            except Exception as exc:
                if not self._failed:
                    self._failed = True
                    original = self._saved[1] if self._saved else sys.__stderr__
                    if original is not None:
                        print(f"corolla: cannot forward logs: {exc}", file=original)
                return
