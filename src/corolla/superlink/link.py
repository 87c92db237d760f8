"""The SuperLink: state, the three gRPC APIs on their own ports, and the ServerApp launcher."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from corolla.common.aioserver import AsyncServer
from corolla.common.appio import AppIoAuth, new_secret, warn_if_exposed
from corolla.common.compression import MIN_SAVING, NONE
from corolla.common.errors import InvalidArgument
from corolla.common.grpc import MAX_MESSAGE_BYTES, bind, create_server, server_options
from corolla.common.guard import Authenticate, Caller, CallInfo, Credential, add_service
from corolla.common.net import is_loopback_address
from corolla.common.tls import security
from corolla.proto.v1 import exec_pb2, fleet_pb2, serverappio_pb2
from corolla.superlink import exec as exec_api
from corolla.superlink import fleet as fleet_api
from corolla.superlink import serverappio as serverappio_api
from corolla.superlink.access import ExecAccess
from corolla.superlink.config import SuperLinkConfig
from corolla.superlink.dispatcher import ProcessDispatcher
from corolla.superlink.heartbeats import AppHeartbeats
from corolla.superlink.idle import IdleWatch
from corolla.superlink.launcher import ServerAppLauncher
from corolla.superlink.nodeauth import FleetAuth
from corolla.superlink.oidc import TokenValidator
from corolla.superlink.runs import Runs
from corolla.superlink.state import LinkState, open_state
from corolla.superlink.wakeups import Wakeups

log = logging.getLogger(__name__)

GRACE = 3.0
FLEET_THREADS = 64  # the Fleet calls that do not wait (heartbeats, pushes, objects)


def _bound(address: str, port: int) -> str:
    """``address`` with the port actually bound (``0.0.0.0:0`` -> ``0.0.0.0:40123``)."""
    return f"{address.rpartition(':')[0]}:{port}"


def _local(address: str, port: int) -> str:
    """Where a local child process reaches an API bound to ``address``."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SuperLink:
    def __init__(
        self, config: SuperLinkConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.state: LinkState = open_state(
            config.database, object_dir=config.object_dir, limits=config.state_limits
        )
        self.runs = Runs(self.state, fab_limits=config.fab_limits)
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._servers: list[grpc.Server | AsyncServer] = []
        self.ports: dict[str, int] = {}
        self.launcher: ServerAppLauncher | None = None
        self.dispatcher: ProcessDispatcher | None = None
        self._validator: TokenValidator | None = None
        # --idle-timeout: busy while a run is unfinished; every Exec call touches it.
        self.idle: IdleWatch | None = None
        if config.idle_timeout is not None:
            self.idle = IdleWatch(
                config.idle_timeout, lambda: bool(self.state.active_runs()), clock
            )

    def idle_expired(self) -> bool:
        """True once --idle-timeout has passed with nothing to do (never without it)."""
        return self.idle is not None and self.idle.expired()

    @property
    def error(self) -> BaseException | None:
        """A crash of a background worker (the daemon then exits non-zero)."""
        worker = self.launcher or self.dispatcher
        return None if worker is None else worker.error

    @property
    def addresses(self) -> dict[str, str]:
        """Where local processes reach each API once started: ``serverappio``, ``fleet``,
        ``exec`` -> ``host:port``."""
        config = self.config
        return {
            "serverappio": _local(config.serverappio_address, self.ports["serverappio"]),
            "fleet": _local(config.fleet_address, self.ports["fleet"]),
            "exec": _local(config.exec_address, self.ports["exec"]),
        }

    def start(self) -> None:
        config = self.config
        credentials = config.tls.credentials() if config.tls else None
        heartbeats = AppHeartbeats()
        serverappio = create_server()
        self.ports["serverappio"] = bind(serverappio, config.serverappio_address, credentials)
        appio_address = _local(config.serverappio_address, self.ports["serverappio"])
        notify: Callable[[], None]
        if config.isolation == "process":
            if not config.appio_secret:
                raise InvalidArgument("isolation 'process' needs the AppIo secret")
            self.dispatcher = ProcessDispatcher(
                self.runs,
                heartbeats,
                attach_timeout=config.app_attach_timeout,
                heartbeat_timeout=config.app_heartbeat_timeout,
                max_concurrent=config.max_concurrent_runs,
            )
            notify, secret = self.dispatcher.notify, config.appio_secret
        else:
            self.launcher = ServerAppLauncher(
                self.runs,
                appio_address,
                heartbeats,
                self._output_dir(),
                max_concurrent=config.max_concurrent_runs,
                start_timeout=config.app_start_timeout,
                heartbeat_timeout=config.app_heartbeat_timeout,
                tls=config.app_tls,
                app_env=config.app_env,
                fab_limits=config.fab_limits,
                spare=config.spare_app_process,
            )
            # Known to nobody: in subprocess mode children get per-run tokens directly.
            notify, secret = self.launcher.notify, new_secret()
        warn_if_exposed(config.serverappio_address, credentials is not None, "ServerAppIo")
        add_service(
            serverappio,
            serverappio_pb2.DESCRIPTOR.services_by_name["ServerAppIo"],
            serverappio_api.ServerAppIoServicer(
                self.runs,
                heartbeats=heartbeats,
                dispatcher=self.dispatcher,
                compression=config.compression,
            ),
            serverappio_api.POLICY,
            AppIoAuth(secret, self.state.run_id_for_token),
        )
        # Long polls wait on its event loop; the other Fleet calls run on its threads.
        fleet = AsyncServer(max_workers=FLEET_THREADS, options=server_options(), name="fleet")
        wakeups = Wakeups(fleet.loop)
        self.state.add_listener(wakeups.notify)
        add_service(
            fleet,
            fleet_pb2.DESCRIPTOR.services_by_name["Fleet"],
            fleet_api.FleetServicer(self.state, wakeups=wakeups, compression=config.compression),
            fleet_api.POLICY,
            FleetAuth(self.state, enabled=config.enable_supernode_auth),
        )
        self.ports["fleet"] = bind(fleet, config.fleet_address, credentials)
        # StartRun carries the FAB: the message may be as large as --max-fab-bytes allows (plus
        # the rest of the request), so that an oversized FAB gets its clear error from `Runs`.
        message_limit = max(MAX_MESSAGE_BYTES, config.fab_limits.max_fab_bytes + (1 << 20))
        fab_limit = [
            ("grpc.max_receive_message_length", message_limit),
            ("grpc.max_send_message_length", message_limit),
        ]
        exec_server = create_server(max_workers=32, options=fab_limit)
        if config.user_auth is not None:
            if credentials is None and not is_loopback_address(config.exec_address):
                log.warning(
                    "user login on an Exec API without TLS (%s): access tokens can be read on "
                    "the network; enable TLS",
                    config.exec_address,
                )
            self._validator = TokenValidator(config.user_auth)
            self._validator.warm()  # a provider down now is retried on the first call
        access = ExecAccess(self.state, self._validator)
        add_service(
            exec_server,
            exec_pb2.DESCRIPTOR.services_by_name["Exec"],
            exec_api.ExecServicer(self.runs, notify, access=access, user_auth=config.user_auth),
            exec_api.POLICY,
            self._touching(access.authenticate),
        )
        self.ports["exec"] = bind(exec_server, config.exec_address, credentials)
        self._servers = [serverappio, fleet, exec_server]
        for server in self._servers:
            server.start()
        if self.launcher is not None:
            self.launcher.start()
        if self.dispatcher is not None:
            self.dispatcher.start()
        mode = security(config.tls)
        log.info(
            "SuperLink ready: serverappio=%s (%s) fleet=%s (%s) exec=%s (%s%s), isolation %s",
            _bound(config.serverappio_address, self.ports["serverappio"]),
            mode,
            _bound(config.fleet_address, self.ports["fleet"]),
            mode,
            _bound(config.exec_address, self.ports["exec"]),
            mode,
            "" if config.user_auth is None else f", user login via {config.user_auth.issuer}",
            config.isolation,
        )
        if config.compression != NONE:
            log.info(
                "compression %s: object chunks sent to pullers that accept it are compressed "
                "where that saves at least %.0f %%",
                config.compression,
                100 * MIN_SAVING,
            )

    def _touching(self, authenticate: Authenticate) -> Authenticate:
        """``authenticate``, counting each call as activity for --idle-timeout."""
        idle = self.idle
        if idle is None:
            return authenticate

        def touch_then_authenticate(credential: Credential, call: CallInfo) -> Caller:
            idle.touch()
            return authenticate(credential, call)

        return touch_then_authenticate

    def _output_dir(self) -> Path:
        """Where ServerApp processes write their output (its tail explains a crash): beside
        the database file or the object directory."""
        if self.config.object_dir is not None:
            return self.config.object_dir.parent / "serverapp-output"
        if self.config.database == ":memory:":
            self._scratch = tempfile.TemporaryDirectory(prefix="corolla-serverapp-")
            return Path(self._scratch.name)
        return Path(self.config.database).parent / "serverapp-output"

    def stop(self) -> None:
        """Graceful: stop accepting calls, end the app processes, close the state."""
        self.state.wake_all()
        events = [server.stop(GRACE) for server in self._servers]
        if self.launcher is not None:
            self.launcher.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        for event in events:
            event.wait(GRACE + 1)
        self.state.close()
        if self._validator is not None:
            self._validator.close()
        if self._scratch is not None:
            self._scratch.cleanup()
        log.info("SuperLink stopped")
