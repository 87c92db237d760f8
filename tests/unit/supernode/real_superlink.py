"""A real in-process SuperLink for SuperNode tests, driven as its ServerApp would drive it.

`Link` stores runs and instructions through the SuperLink's state and reads back what the node
delivered: replies (and, like `ServerAppIo.PullMessages`, error replies for instructions whose
node went offline), logs and the node table. Its clock is the state's, settable by the test
(`advance`), so offline marking is shown without waiting for heartbeats to run out.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from supernode_fakes import wait_for

from corolla.common.tls import ServerTls
from corolla.records import ArrayRecord, ConfigRecord, Message, RecordDict
from corolla.records.wire import decode_messages, encode_messages
from corolla.superlink.config import SuperLinkConfig
from corolla.superlink.link import SuperLink
from corolla.superlink.messages import from_stored, lost_replies, to_stored
from corolla.superlink.state import RunStatus, SubStatus

NO_APP_TIMEOUT = 3600.0  # runs here have no ServerApp: never count them as lost


def start_superlink(
    fleet_address: str = "127.0.0.1:0", tls: ServerTls | None = None, compression: str = "none"
) -> SuperLink:
    link = SuperLink(
        SuperLinkConfig(
            serverappio_address="127.0.0.1:0",
            fleet_address=fleet_address,
            exec_address="127.0.0.1:0",
            database=":memory:",
            tls=tls,
            app_heartbeat_timeout=NO_APP_TIMEOUT,
            compression=compression,
        )
    )
    link.start()
    return link


def running_run(link: SuperLink, fab: tuple[bytes, str]) -> int:
    """A run of ``fab`` moved straight to ``running`` (no ServerApp gets launched for it)."""
    data, fab_hash = fab
    state = link.state
    state.store_fab(fab_hash, data)
    run_id = state.create_run(
        fab_id="tests/testapp",
        fab_version="1.0.0",
        fab_hash=fab_hash,
        override_config={},
        run_config={"lr": 0.5},
    )
    state.update_run_status(run_id, RunStatus.STARTING, expected=RunStatus.PENDING)
    state.update_run_status(run_id, RunStatus.RUNNING)
    return run_id


def send(
    link: SuperLink, run_id: int, node_id: int, action: str = "ok", arrays: list[Any] | None = None
) -> str:
    """Store an instruction for ``node_id`` as the ServerApp would; returns its message id."""
    content = RecordDict({"cfg": ConfigRecord({"action": action})})
    if arrays is not None:
        content["arrays"] = ArrayRecord.from_numpy_ndarrays(arrays)
    message = Message(content, dst_node_id=node_id, message_type="train")
    message.metadata.run_id = run_id
    protos, objects = encode_messages([message])
    for object_id, data in objects.items():
        link.state.store_object(run_id, object_id, data)
    link.state.store_instructions([to_stored(protos[0], link.state)])
    return message.metadata.message_id


def reply_to(link: SuperLink, run_id: int, message_id: str, timeout: float = 20.0) -> Message:
    """The reply to ``message_id`` as the ServerApp gets it: the node's, or the SuperLink's
    error reply once the node went offline (asserts one arrives within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no reply to {message_id} within {timeout} s"
        stored = link.state.pull_replies(run_id, [message_id], wait=min(remaining, 0.2))
        protos = [from_stored(m) for m in stored] or lost_replies(link.state, run_id, [message_id])
        if protos:

            def read(ids: list[str]) -> dict[str, bytes]:
                return {oid: b"".join(link.state.read_object(oid, 1 << 20)) for oid in ids}

            return decode_messages(protos[:1], read)[0]


class Link:
    """A started SuperLink plus the ServerApp-side helpers the node tests need."""

    def __init__(
        self,
        fleet_address: str = "127.0.0.1:0",
        tls: ServerTls | None = None,
        compression: str = "none",
    ) -> None:
        self.superlink = start_superlink(fleet_address, tls, compression)
        self.state = self.superlink.state
        self._offset = 0.0
        self._clock_lock = threading.Lock()
        real_clock = self.state.clock
        self.state.clock = lambda: real_clock() + self._offset  # type: ignore[method-assign]
        self._run_of: dict[str, int] = {}  # message id -> run id
        self._stopped = False

    @property
    def address(self) -> str:
        return self.superlink.addresses["fleet"]

    def stop(self) -> None:
        """Stop the SuperLink (again is a no-op: a test may stop it before the fixture)."""
        if not self._stopped:
            self._stopped = True
            self.superlink.stop()

    def advance(self, seconds: float) -> None:
        """Move the SuperLink's clock forward (heartbeats and TTLs run out by it)."""
        with self._clock_lock:
            self._offset += seconds

    # -- runs and messages ----------------------------------------------------------------------

    def add_run(self, fab: tuple[bytes, str]) -> int:
        return running_run(self.superlink, fab)

    def finish(self, run_id: int) -> None:
        """The run's ServerApp reports it completed (the nodes hear of it)."""
        assert self.superlink.runs.finish(run_id, SubStatus.COMPLETED, "")

    def send(
        self, run_id: int, node_id: int, action: str = "ok", arrays: list[Any] | None = None
    ) -> str:
        message_id = send(self.superlink, run_id, node_id, action, arrays)
        self._run_of[message_id] = run_id
        return message_id

    def reply_to(self, message_id: str, timeout: float = 20.0) -> Message:
        return reply_to(self.superlink, self._run_of[message_id], message_id, timeout)

    def replies_to(self, message_id: str) -> int:
        """How many replies to ``message_id`` the SuperLink holds."""
        return len(self.state.pull_replies(self._run_of[message_id], [message_id]))

    def log_lines(self) -> list[str]:
        lines: list[str] = []
        for run in self.state.list_runs():
            lines.extend(self.state.get_logs(run.run_id)[0])
        return lines

    # -- nodes ----------------------------------------------------------------------------------

    def online(self) -> list[int]:
        return self.state.online_node_ids()

    def wait_node(self, timeout: float = 20.0) -> int:
        assert wait_for(lambda: bool(self.online()), timeout), "no node registered"
        return max(self.online())

    def forget_node(self, node_id: int) -> None:
        """What a SuperLink that lost its node table looks like to that node."""
        self.state.delete_node(node_id)
