"""The node id a SuperNode keeps across restarts, and the ready file it writes once registered.

The node id file holds ``{"node_id": N, "superlink": "host:port"}``. It is guarded by an
exclusive ``flock`` on a ``.lock`` sibling held while the node runs: a second node sharing the
file gets no lock, logs a warning and neither asks for the id nor writes it. Both files are
written atomically, mode 0600, parent directories created (`common.config.write_ready_file`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path

from corolla.common.config import write_ready_file

log = logging.getLogger(__name__)


class NodeIdFile:
    """The persisted node id of one SuperNode (see the module docstring)."""

    def __init__(self, path: Path, superlink: str) -> None:
        self.path = path
        self.superlink = superlink
        self._lock_fd: int | None = None

    @property
    def owned(self) -> bool:
        """True while this node holds the file's lock (and so may use and write the id)."""
        return self._lock_fd is not None

    def claim(self) -> int:
        """Lock the file and return the id to ask the SuperLink for (0: none, or not ours)."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning("cannot use node id file %s: %s; the node id is not kept", self.path, exc)
            return 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            log.warning(
                "node id file %s is in use by another SuperNode; this node gets a new id "
                "and does not keep it",
                self.path,
            )
            return 0
        self._lock_fd = fd
        return self._read()

    def _read(self) -> int:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable node id file %s: %s", self.path, exc)
            return 0
        node_id = data.get("node_id") if isinstance(data, dict) else None
        if not isinstance(node_id, int) or isinstance(node_id, bool) or node_id <= 0:
            log.warning("ignoring node id file %s: no valid node_id in it", self.path)
            return 0
        if data.get("superlink") != self.superlink:
            log.info(
                "node id file %s is for the SuperLink at %s, not %s; asking for a new id",
                self.path,
                data.get("superlink"),
                self.superlink,
            )
            return 0
        log.info("asking the SuperLink for node id %d again (from %s)", node_id, self.path)
        return node_id

    def save(self, node_id: int) -> None:
        """Keep ``node_id`` (only if this node holds the lock); failures are logged."""
        if not self.owned:
            return
        try:
            write_ready_file(self.path, {"node_id": node_id, "superlink": self.superlink})
        except OSError as exc:
            log.warning("cannot write node id file %s: %s", self.path, exc)

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None
