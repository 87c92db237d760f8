"""Exec API servicer: the flwr CLI submits, lists, stops and follows runs here."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from corolla.common.errors import InvalidArgument
from corolla.common.grpc import abort_on_error
from corolla.fab import AppConfig, unpack_fab, verify_fab
from corolla.proto.v1 import exec_pb2 as epb
from corolla.proto.v1 import run_pb2 as rpb
from corolla.records.context import UserConfig
from corolla.records.serde import user_config_from_proto
from corolla.superlink.convert import run_to_proto
from corolla.superlink.state import LinkState, RunStatus, SubStatus

log = logging.getLogger(__name__)

LOG_POLL = 0.1
STOPPED_BY_USER = "stopped by user"


def merge_run_config(defaults: UserConfig, overrides: UserConfig) -> UserConfig:
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "none"
        raise InvalidArgument(f"unknown run-config keys: {', '.join(unknown)} (known: {known})")
    return {**defaults, **overrides}


def check_fab(content: bytes, fab_hash: str) -> AppConfig:
    """Verify the hash and unpack into a scratch dir: a malformed FAB is refused up front."""
    if not content:
        raise InvalidArgument("StartRun without a FAB")
    verify_fab(content, fab_hash)
    with tempfile.TemporaryDirectory(prefix="corolla-fab-check-") as tmp:
        return unpack_fab(content, Path(tmp) / "app")


class ExecServicer:
    def __init__(self, state: LinkState, on_run_submitted: Callable[[], None]) -> None:
        self._state = state
        self._on_submitted = on_run_submitted

    @abort_on_error
    def StartRun(
        self, request: epb.StartRunRequest, context: grpc.ServicerContext
    ) -> epb.StartRunResponse:
        app = check_fab(request.fab.content, request.fab.hash)
        run_config = merge_run_config(
            dict(app.run_config), user_config_from_proto(request.override_config)
        )
        self._state.store_fab(request.fab.hash, request.fab.content)
        run_id = self._state.create_run(
            fab_id=f"{app.publisher}/{app.name}",
            fab_version=app.version,
            fab_hash=request.fab.hash,
            override_config=user_config_from_proto(request.override_config),
            run_config=run_config,
            federation=request.federation,
        )
        log.info("run %d submitted (%s/%s %s)", run_id, app.publisher, app.name, app.version)
        self._on_submitted()
        return epb.StartRunResponse(run_id=run_id)

    @abort_on_error
    def StopRun(
        self, request: epb.StopRunRequest, context: grpc.ServicerContext
    ) -> epb.StopRunResponse:
        run = self._state.get_run(request.run_id)
        if run.status == RunStatus.FINISHED:
            return epb.StopRunResponse(stopped=False)
        self._state.update_run_status(
            run.run_id, RunStatus.FINISHED, SubStatus.STOPPED, STOPPED_BY_USER
        )
        self._state.wake_all()
        self._on_submitted()
        log.info("run %d stopped by user", run.run_id)
        return epb.StopRunResponse(stopped=True)

    @abort_on_error
    def ListRuns(
        self, request: epb.ListRunsRequest, context: grpc.ServicerContext
    ) -> epb.ListRunsResponse:
        runs = [self._state.get_run(request.run_id)] if request.run_id else self._state.list_runs()
        return epb.ListRunsResponse(runs=[run_to_proto(r) for r in runs], now=time.time())

    @abort_on_error
    def StreamLogs(
        self, request: epb.StreamLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[epb.StreamLogsResponse]:
        self._state.get_run(request.run_id)  # NotFound before the stream starts
        return self._stream(request, context)

    def _stream(
        self, request: epb.StreamLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[epb.StreamLogsResponse]:
        after = request.after
        while True:
            run = self._state.get_run(request.run_id)
            lines, after = self._state.get_logs(request.run_id, after)
            done = run.status == RunStatus.FINISHED
            if done:  # lines pushed just before the end are still sent
                more, after = self._state.get_logs(request.run_id, after)
                lines += more
            status = rpb.RunStatus(
                status=run.status, sub_status=run.sub_status, details=run.details
            )
            if lines or done or not request.follow:
                yield epb.StreamLogsResponse(lines=lines, next=after, status=status)
            if done or not request.follow or not context.is_active():
                return
            self._state.wait_for_status_change(run.run_id, run.status, LOG_POLL)
