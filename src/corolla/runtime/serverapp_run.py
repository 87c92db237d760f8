"""One run of a ServerApp: pull inputs, run the app on a `GrpcGrid` (or, for a simulation run,
a `SimulationGrid`: see `corolla.runtime.simulated`), push outputs and status."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import grpc

from corolla.clientapp.clientapp import short_traceback
from corolla.common.errors import AppError, CorollaError, Unauthenticated
from corolla.common.grpc import error_from_rpc
from corolla.fab import load_app_config
from corolla.proto.v1 import serverappio_pb2 as spb
from corolla.proto.v1.serverappio_pb2_grpc import ServerAppIoStub
from corolla.records import _spool
from corolla.records.context import Context
from corolla.records.serde import context_to_proto, user_config_from_proto
from corolla.records.wire import decode_context
from corolla.runtime.grid import RETRY_WINDOW, GrpcGrid, SuperLinkClient
from corolla.runtime.loader import install, load_component, unload
from corolla.runtime.logs import LogForwarder
from corolla.runtime.simulated import run_grid
from corolla.serverapp.serverapp import ServerApp

log = logging.getLogger("corolla.serverapp")

RPC_TIMEOUT = 60.0
HEARTBEAT_INTERVAL = 2.0


class _Heartbeat:
    """Tells the SuperLink the process is alive; notes when the run was stopped elsewhere.

    A failed heartbeat (the SuperLink is restarting) is logged once per outage and retried on
    the next beat."""

    def __init__(
        self, stub: ServerAppIoStub, token: str, on_stopped: Callable[[], None] | None
    ) -> None:
        self._stub, self._token = stub, token
        self._on_stopped = on_stopped
        self._failing = False
        self._done = threading.Event()
        self.run_stopped = False
        self._thread = threading.Thread(target=self._loop, name="app-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=RPC_TIMEOUT)

    def _loop(self) -> None:
        while not self._done.wait(HEARTBEAT_INTERVAL):
            try:
                reply = self._stub.Heartbeat(
                    spb.AppHeartbeatRequest(token=self._token), timeout=RPC_TIMEOUT
                )
            except grpc.RpcError as exc:
                error = error_from_rpc(exc)
                if not isinstance(error, Unauthenticated):
                    if not self._failing:
                        log.warning("heartbeat failed: %s (retrying)", error)
                    self._failing = True
                    continue
                reply = spb.AppHeartbeatResponse(run_active=False)  # token void: run over
            self._failing = False
            if not reply.run_active:
                # Stopped elsewhere: the app's next Grid call fails and the run ends here.
                self.run_stopped = True
                if self._on_stopped is not None:
                    self._on_stopped()
                return


def execute_run(
    stub: ServerAppIoStub,
    channel: grpc.Channel,
    token: str,
    *,
    retry_window: float = RETRY_WINDOW,
    on_stopped: Callable[[], None] | None = None,
) -> bool:
    """Run the run ``token`` belongs to; True if it completed. Calls to the SuperLink retry for
    up to ``retry_window`` seconds while it is unreachable."""
    link = SuperLinkClient(channel, token, retry_window)
    inputs = link.call(
        "PullAppInputs",
        lambda: stub.PullAppInputs(spb.PullAppInputsRequest(token=token), timeout=RPC_TIMEOUT),
    )
    run_id = inputs.run.run_id
    grid = GrpcGrid(
        channel,
        token,
        run_id,
        client=link,
        object_dir=inputs.object_dir,
        staging_dir=inputs.staging_dir,
    )

    def push_logs(lines: list[str]) -> None:
        request = spb.PushLogsRequest(run_id=run_id, token=token, lines=lines)
        link.call("PushLogs", lambda: stub.PushLogs(request, timeout=30))

    sub_status, details = "completed", ""
    context: Context | None = None
    app_dir: Path | None = None
    # The large arrays the ServerApp makes (its model) go into the SuperLink's staging
    # directory, when it shares one: pushing them is a link (see `corolla.records._spool`).
    spool = Path(inputs.staging_dir) if inputs.staging_dir else None
    with (
        _spool.using(spool),
        LogForwarder(push_logs),
        _Heartbeat(stub, token, on_stopped) as heartbeat,
    ):
        try:
            context = decode_context(inputs.context, grid._fetch)
            app_dir = install(inputs.fab.content, inputs.run.fab_hash)
            reference = load_app_config(app_dir).serverapp
            app = load_component(app_dir, reference, ServerApp)
            with run_grid(
                grid,
                run_id=run_id,
                federation_options=user_config_from_proto(inputs.run.federation_options),
                run_config=user_config_from_proto(inputs.run.run_config),
                app_dir=app_dir,
            ) as app_grid:
                log.info("run %d: starting ServerApp %s", run_id, reference)
                app(app_grid, context)
            log.info("run %d: ServerApp finished", run_id)
        except AppError as exc:
            sub_status, details = "failed", str(exc)
            log.error("%s", exc)
        except Exception as exc:
            if heartbeat.run_stopped:
                sub_status, details = "failed", "run stopped while the ServerApp was running"
                log.warning("run %d was stopped; ServerApp abandoned", run_id)
            else:
                sub_status = "failed"
                details = f"ServerApp raised {type(exc).__name__}: {exc}\n{short_traceback(exc)}"
                log.error("ServerApp raised an exception:\n%s", short_traceback(exc))
        finally:
            if app_dir is not None:
                unload(app_dir)
    request = spb.PushAppOutputsRequest(token=token, sub_status=sub_status, details=details)
    if context is not None:
        request.context.CopyFrom(context_to_proto(context))
    try:
        link.call("PushAppOutputs", lambda: stub.PushAppOutputs(request, timeout=RPC_TIMEOUT))
    except CorollaError as exc:
        log.error("cannot report the result of run %d: %s", run_id, exc)
        return False
    return sub_status == "completed"
