"""The ``corolla`` logger for app code: ``log(INFO, "round %s done", n)`` as in Flower apps.

`log` is the bound ``Logger.log`` of the ``corolla`` logger (Flower's is that of ``flwr``), so
records carry the caller's file and line. Every Corolla module logs under ``corolla.*``, so the
handlers an entry point installs (``flwr-serverapp``, ``flwr-clientapp``, the simulation
workers) show app lines too. This module installs no handler; `configure` adds a file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from corolla.common.errors import InvalidArgument

LOGGER_NAME = "corolla"
LOGGER = logging.getLogger(LOGGER_NAME)

log = LOGGER.log


def configure(identifier: str, filename: str | None = None, host: str | None = None) -> None:
    """Also write the ``corolla`` logger's records to ``filename``, each line tagged ``identifier``.

    The file handler takes every level; which records reach it is the logger's effective level
    (an entry point's, or ``logging.getLogger("corolla").setLevel(...)``). Configuring the same
    file twice adds no second handler.

    ``host`` is refused: Flower can post log records to an HTTP server, Corolla sends nothing to
    any host on its own. Attach a `logging.handlers.HTTPHandler` yourself if you want that.
    """
    if host is not None:
        raise InvalidArgument(
            f"configure(host={host!r}): Corolla does not ship logs to a remote host; "
            "add a logging.handlers.HTTPHandler to logging.getLogger('corolla') to do so"
        )
    if not filename:
        return
    target = str(Path(filename).resolve())
    for existing in LOGGER.handlers:
        if isinstance(existing, logging.FileHandler) and existing.baseFilename == target:
            return
    tag = identifier.replace("%", "%%")  # the identifier is text, not a format directive
    handler = logging.FileHandler(target, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(
        logging.Formatter(
            f"{tag} | %(asctime)s %(levelname)s %(name)s | %(filename)s:%(lineno)d | %(message)s"
        )
    )
    LOGGER.addHandler(handler)
