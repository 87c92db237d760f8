"""A thin client of the SuperLink's Exec API; protobuf stays in this module.

Every call has a deadline, except following a run's logs, which the server ends when the run
ends. Before the first call the channel must connect within ``connect_timeout`` seconds; a
refused connection fails at once.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import grpc

from corolla.cli.auth import LoginDetails
from corolla.common.configvalues import user_config_from_proto, user_config_to_proto
from corolla.common.errors import (
    CorollaError,
    DeadlineExceeded,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from corolla.common.grpc import create_channel, error_from_rpc
from corolla.common.tls import ClientTls
from corolla.fab import ConfigValue
from corolla.proto.v1 import exec_pb2, exec_pb2_grpc, run_pb2

CONNECT_TIMEOUT = 5.0
CALL_TIMEOUT = 30.0
UPLOAD_BYTES_PER_SECOND = 1_000_000  # StartRun carries the FAB: its deadline grows with it
_QUEUE_STEP = 0.1  # seconds the caller's thread waits for a log batch before checking again
# The SuperLink decides how large a FAB may be (--max-fab-bytes); the client only stays under
# what one gRPC message can carry at all.
MAX_UPLOAD_BYTES = 2**31 - 1 - 1024 * 1024
_FAB_CHANNEL_OPTIONS = [("grpc.max_send_message_length", 2**31 - 1)]

FINISHED = "finished"
COMPLETED = "completed"
FAILED = "failed"
STOPPED = "stopped"


@dataclass(frozen=True)
class RunStatus:
    """``status`` is pending, starting, running or finished; ``sub_status`` says how it ended."""

    status: str
    sub_status: str = ""
    details: str = ""

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    def __str__(self) -> str:
        return f"{self.status}:{self.sub_status}" if self.sub_status else self.status


@dataclass(frozen=True)
class RunInfo:
    """A run as the SuperLink reports it; times are Unix seconds, 0 when not reached."""

    run_id: int
    fab_id: str
    fab_version: str
    fab_hash: str
    status: RunStatus
    pending_at: float = 0.0
    starting_at: float = 0.0
    running_at: float = 0.0
    finished_at: float = 0.0
    federation: str = ""
    owner: str = ""
    override_config: dict[str, ConfigValue] = field(default_factory=dict)
    run_config: dict[str, ConfigValue] = field(default_factory=dict)

    @property
    def app(self) -> str:
        return f"{self.fab_id}@{self.fab_version}"


@dataclass(frozen=True)
class RunList:
    """Runs and the SuperLink's clock when it listed them (for elapsed times)."""

    runs: tuple[RunInfo, ...]
    now: float


@dataclass(frozen=True)
class LogBatch:
    """Log lines, the index to continue ``after``, and the run's status when they were sent."""

    lines: tuple[str, ...]
    next: int
    status: RunStatus | None


@dataclass(frozen=True)
class NodeInfo:
    """A SuperNode as the SuperLink knows it; times are Unix seconds, 0 when never seen."""

    node_id: int
    fingerprint: str
    online: bool
    last_seen: float
    registered_at: float


@dataclass(frozen=True)
class AuditEntry:
    """One Exec call of the SuperLink's audit trail."""

    event_id: int
    at: float
    user: str
    action: str
    run_id: int
    allowed: bool
    reason: str
    peer: str


class TokenSource(Protocol):
    """Where the client gets the user's access token (`corolla.cli.auth.TokenSession`)."""

    def access_token(self) -> str | None:
        """The current token (refreshed first if it is about to expire); None: not logged in."""

    def refresh(self) -> bool:
        """Get a new token now; False if that is not possible (log in again)."""


class ExecClient:
    """Calls the Exec API at ``address``; use as a context manager to close the channel.

    With ``auth``, every call carries the user's access token; a call refused as
    unauthenticated is retried once after a token refresh, so an expired token is renewed
    without the user noticing."""

    def __init__(
        self,
        address: str,
        *,
        insecure: bool,
        root_certificates: bytes | None = None,
        client_tls: ClientTls | None = None,
        auth: TokenSource | None = None,
        login_hint: str = "",
        connect_timeout: float = CONNECT_TIMEOUT,
        call_timeout: float = CALL_TIMEOUT,
    ) -> None:
        self.address = address
        self._auth = auth
        self._login_hint = login_hint  # the error when a login is needed and there is none
        self._insecure = insecure
        self._connect_timeout = connect_timeout
        self._call_timeout = call_timeout
        self._channel = create_channel(
            address,
            insecure=insecure,
            root_certificates=root_certificates,
            client_tls=client_tls,
            options=_FAB_CHANNEL_OPTIONS,
        )
        self._stub = exec_pb2_grpc.ExecStub(self._channel)
        self._connected = False

    def __enter__(self) -> ExecClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def start_run(
        self,
        fab_content: bytes,
        fab_hash: str,
        *,
        override_config: Mapping[str, ConfigValue],
        federation: str,
        federation_options: Mapping[str, ConfigValue],
    ) -> int:
        if len(fab_content) > MAX_UPLOAD_BYTES:
            raise ResourceExhausted(
                f"the FAB is {len(fab_content):,} bytes; the Exec API takes at most "
                f"{MAX_UPLOAD_BYTES:,} (add large files to .gitignore)"
            )
        request = exec_pb2.StartRunRequest(
            fab=run_pb2.Fab(hash=fab_hash, content=fab_content),
            override_config=user_config_to_proto(dict(override_config)),
            federation=federation,
            federation_options=user_config_to_proto(dict(federation_options)),
        )
        timeout = self._call_timeout + len(fab_content) / UPLOAD_BYTES_PER_SECOND
        response = self._unary(self._stub.StartRun, request, timeout)
        return int(response.run_id)

    def stop_run(self, run_id: int) -> bool:
        response = self._unary(self._stub.StopRun, exec_pb2.StopRunRequest(run_id=run_id))
        return bool(response.stopped)

    def list_runs(self, run_id: int = 0) -> RunList:
        """All runs, or only ``run_id`` (raises `NotFound` if the SuperLink does not know it)."""
        response = self._unary(self._stub.ListRuns, exec_pb2.ListRunsRequest(run_id=run_id))
        runs = tuple(_run_from_proto(run) for run in response.runs)
        if run_id and not any(run.run_id == run_id for run in runs):
            raise NotFound(f"run {run_id} not found")
        return RunList(runs=runs, now=response.now)

    def register_node(self, public_key: bytes) -> tuple[int, str]:
        """Put a SuperNode public key on the allow-list: ``(node_id, fingerprint)``."""
        request = exec_pb2.RegisterNodeRequest(public_key=public_key)
        response = self._unary(self._stub.RegisterNode, request)
        return response.node_id, response.fingerprint

    def unregister_node(self, node_id: int) -> None:
        self._unary(self._stub.UnregisterNode, exec_pb2.UnregisterNodeRequest(node_id=node_id))

    def list_nodes(self) -> tuple[list[NodeInfo], float]:
        """The SuperNodes and the SuperLink's clock when it listed them."""
        response = self._unary(self._stub.ListNodes, exec_pb2.ListNodesRequest())
        nodes = [
            NodeInfo(n.node_id, n.fingerprint, n.online, n.last_seen, n.registered_at)
            for n in response.nodes
        ]
        return nodes, response.now

    def get_login_details(self) -> LoginDetails | None:
        """Where to log in for this SuperLink; None when it has no user login."""
        request = exec_pb2.GetLoginDetailsRequest()
        response = self._unary(self._stub.GetLoginDetails, request, authenticated=False)
        if not response.login_required:
            return None
        return LoginDetails(
            issuer=response.issuer, client_id=response.client_id, scopes=tuple(response.scopes)
        )

    def list_audit(
        self, *, user: str = "", run_id: int = 0, since: float = 0.0, limit: int = 0
    ) -> list[AuditEntry]:
        """The SuperLink's audit trail, newest first (admins only when login is on)."""
        request = exec_pb2.ListAuditEventsRequest(
            user=user, run_id=run_id, since=since, limit=limit
        )
        response = self._unary(self._stub.ListAuditEvents, request)
        return [
            AuditEntry(e.event_id, e.at, e.user, e.action, e.run_id, e.allowed, e.reason, e.peer)
            for e in response.events
        ]

    def _unary(
        self,
        method: Any,
        request: Any,
        timeout: float | None = None,
        *,
        authenticated: bool = True,
    ) -> Any:
        """One call with the user's token; refused as unauthenticated, it is retried once
        with a refreshed token."""
        self._connect()
        timeout = self._call_timeout if timeout is None else timeout
        metadata = self._metadata() if authenticated else ()
        try:
            try:
                return method(request, timeout=timeout, metadata=metadata)
            except grpc.RpcError as exc:
                if not (metadata and self._refusal(exc) and self._auth and self._auth.refresh()):
                    raise
            return method(request, timeout=timeout, metadata=self._metadata())
        except grpc.RpcError as exc:
            raise self._error(exc, logged_in=bool(metadata)) from None

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        token = self._auth.access_token() if self._auth is not None else None
        return (("authorization", f"Bearer {token}"),) if token else ()

    @staticmethod
    def _refusal(exc: grpc.RpcError) -> bool:
        return isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.UNAUTHENTICATED

    def get_run(self, run_id: int) -> RunInfo:
        return next(run for run in self.list_runs(run_id).runs if run.run_id == run_id)

    def stream_logs(self, run_id: int, *, after: int = 0, follow: bool) -> Iterator[LogBatch]:
        """Log batches from line ``after`` on; with ``follow``, until the run ends.

        The stream is read by a helper thread and handed over through a queue the caller's
        thread waits on in short steps, so Ctrl-C always reaches the caller at once (a thread
        blocked inside a gRPC stream may not see a signal for a long time)."""
        self._connect()
        request = exec_pb2.StreamLogsRequest(run_id=run_id, after=after, follow=follow)
        metadata = self._metadata()
        call = self._stub.StreamLogs(
            request, timeout=None if follow else self._call_timeout, metadata=metadata
        )
        batches: queue.Queue[exec_pb2.StreamLogsResponse | BaseException | None] = queue.Queue()

        def read() -> None:
            try:
                for response in call:
                    batches.put(response)
                batches.put(None)
            except BaseException as exc:  # handed to the caller's thread
                batches.put(exc)

        reader = threading.Thread(target=read, name="log-stream", daemon=True)
        reader.start()
        try:
            while True:
                try:
                    item = batches.get(timeout=_QUEUE_STEP)
                except queue.Empty:
                    continue
                if item is None:
                    return
                if isinstance(item, grpc.RpcError):
                    raise self._error(item, logged_in=bool(metadata)) from None
                if isinstance(item, BaseException):
                    raise item
                status = _status_from_proto(item.status) if item.HasField("status") else None
                yield LogBatch(lines=tuple(item.lines), next=item.next, status=status)
        finally:
            call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs
            reader.join(timeout=_QUEUE_STEP * 20)

    def _connect(self) -> None:
        if not self._connected:
            wait_until_ready(self._channel, self._connect_timeout, self._unreachable())
            self._connected = True

    def _unreachable(self) -> str:
        hint = (
            "is it running?" if self._insecure else "is it running, with a certificate you trust?"
        )
        return f"cannot reach the SuperLink at {self.address} ({hint})"

    def _error(self, exc: grpc.RpcError, *, logged_in: bool = True) -> CorollaError:
        error = error_from_rpc(exc, peer=self.address)
        if isinstance(error, Unauthenticated) and not logged_in and self._login_hint:
            return Unauthenticated(self._login_hint)
        if isinstance(error, Unavailable):
            details = exc.details() if isinstance(exc, grpc.Call) else ""
            return Unavailable(f"{self._unreachable()}: {details or 'connection lost'}")
        if isinstance(error, DeadlineExceeded):
            return DeadlineExceeded(f"the SuperLink at {self.address} did not answer in time")
        return error


def wait_until_ready(channel: grpc.Channel, timeout: float, message: str) -> None:
    """Return once ``channel`` is connected; raise `Unavailable` on failure or after ``timeout``."""
    reached = threading.Event()
    states: list[grpc.ChannelConnectivity] = []
    ends = (
        grpc.ChannelConnectivity.READY,
        grpc.ChannelConnectivity.TRANSIENT_FAILURE,
        grpc.ChannelConnectivity.SHUTDOWN,
    )

    def on_change(state: grpc.ChannelConnectivity) -> None:
        if state in ends:
            states.append(state)
            reached.set()

    channel.subscribe(on_change, try_to_connect=True)
    try:
        if not reached.wait(timeout):
            raise Unavailable(f"{message}: no connection within {timeout:g} s")
    finally:
        channel.unsubscribe(on_change)
    if states[0] != grpc.ChannelConnectivity.READY:
        raise Unavailable(message)


def _status_from_proto(status: run_pb2.RunStatus) -> RunStatus:
    return RunStatus(status=status.status, sub_status=status.sub_status, details=status.details)


def _run_from_proto(run: run_pb2.Run) -> RunInfo:
    return RunInfo(
        run_id=run.run_id,
        fab_id=run.fab_id,
        fab_version=run.fab_version,
        fab_hash=run.fab_hash,
        status=_status_from_proto(run.status),
        pending_at=run.pending_at,
        starting_at=run.starting_at,
        running_at=run.running_at,
        finished_at=run.finished_at,
        federation=run.federation,
        owner=run.owner,
        override_config=user_config_from_proto(run.override_config),
        run_config=user_config_from_proto(run.run_config),
    )
