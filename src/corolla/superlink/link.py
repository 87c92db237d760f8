"""The SuperLink: state, the three gRPC APIs on their own ports, and the ServerApp launcher."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc

from corolla.common.appio import new_secret, warn_if_exposed
from corolla.common.errors import InvalidArgument
from corolla.common.grpc import MAX_FAB_BYTES, bind, create_server
from corolla.common.transfer import add_service
from corolla.proto.v1 import exec_pb2, fleet_pb2, serverappio_pb2
from corolla.superlink.config import SuperLinkConfig
from corolla.superlink.dispatcher import ProcessDispatcher
from corolla.superlink.exec import ExecServicer
from corolla.superlink.fleet import FleetServicer
from corolla.superlink.heartbeats import AppHeartbeats
from corolla.superlink.launcher import ServerAppLauncher
from corolla.superlink.runs import Runs
from corolla.superlink.serverappio import ServerAppIoServicer
from corolla.superlink.state import LinkState, SqliteLinkState

log = logging.getLogger(__name__)

GRACE = 3.0


def _local(address: str, port: int) -> str:
    """Where a local child process reaches an API bound to ``address``."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SuperLink:
    def __init__(self, config: SuperLinkConfig) -> None:
        self.config = config
        if config.database != ":memory:":
            Path(config.database).parent.mkdir(parents=True, exist_ok=True)
        self.state: LinkState = SqliteLinkState(config.database)
        self.runs = Runs(self.state)
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._servers: list[grpc.Server] = []
        self.ports: dict[str, int] = {}
        self.launcher: ServerAppLauncher | None = None
        self.dispatcher: ProcessDispatcher | None = None

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
                root_certificates=config.tls_root_certificates,
            )
            # Known to nobody: in subprocess mode children get per-run tokens directly.
            notify, secret = self.launcher.notify, new_secret()
        warn_if_exposed(config.serverappio_address, credentials is not None, "ServerAppIo")
        add_service(
            serverappio,
            serverappio_pb2.DESCRIPTOR.services_by_name["ServerAppIo"],
            ServerAppIoServicer(
                self.runs, secret=secret, heartbeats=heartbeats, dispatcher=self.dispatcher
            ),
        )
        fleet = create_server(max_workers=256)
        add_service(
            fleet, fleet_pb2.DESCRIPTOR.services_by_name["Fleet"], FleetServicer(self.state)
        )
        self.ports["fleet"] = bind(fleet, config.fleet_address, credentials)
        fab_limit = [
            ("grpc.max_receive_message_length", MAX_FAB_BYTES),
            ("grpc.max_send_message_length", MAX_FAB_BYTES),
        ]
        exec_server = create_server(max_workers=32, options=fab_limit)
        add_service(
            exec_server,
            exec_pb2.DESCRIPTOR.services_by_name["Exec"],
            ExecServicer(self.runs, notify),
        )
        self.ports["exec"] = bind(exec_server, config.exec_address, credentials)
        self._servers = [serverappio, fleet, exec_server]
        for server in self._servers:
            server.start()
        if self.launcher is not None:
            self.launcher.start()
        if self.dispatcher is not None:
            self.dispatcher.start()
        log.info(
            "SuperLink ready: serverappio=%s fleet=%s exec=%s (isolation %s, %s)",
            appio_address,
            _local(config.fleet_address, self.ports["fleet"]),
            _local(config.exec_address, self.ports["exec"]),
            config.isolation,
            "TLS" if credentials else "insecure",
        )

    def _output_dir(self) -> Path:
        """Where ServerApp processes write their output (its tail explains a crash)."""
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
        if self._scratch is not None:
            self._scratch.cleanup()
        log.info("SuperLink stopped")
