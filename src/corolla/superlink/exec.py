"""Exec API servicer: the flwr CLI submits, lists, stops and follows runs here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import grpc

from corolla.common.grpc import abort_on_error
from corolla.proto.v1 import exec_pb2 as epb
from corolla.proto.v1 import run_pb2 as rpb
from corolla.records.serde import user_config_from_proto
from corolla.superlink.convert import run_to_proto
from corolla.superlink.runs import Runs
from corolla.superlink.state import RunStatus

log = logging.getLogger(__name__)

LOG_POLL = 0.1


class ExecServicer:
    def __init__(self, runs: Runs, on_run_submitted: Callable[[], None]) -> None:
        self._runs = runs
        self._state = runs.state
        self._on_submitted = on_run_submitted

    @abort_on_error
    def StartRun(
        self, request: epb.StartRunRequest, context: grpc.ServicerContext
    ) -> epb.StartRunResponse:
        run_id = self._runs.submit(
            request.fab.content,
            request.fab.hash,
            user_config_from_proto(request.override_config),
            request.federation,
        )
        self._on_submitted()
        return epb.StartRunResponse(run_id=run_id)

    @abort_on_error
    def StopRun(
        self, request: epb.StopRunRequest, context: grpc.ServicerContext
    ) -> epb.StopRunResponse:
        stopped = self._runs.stop(request.run_id)
        if stopped:
            self._on_submitted()
        return epb.StopRunResponse(stopped=stopped)

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
