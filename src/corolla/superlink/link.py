"""The SuperLink: state, the three gRPC APIs on their own ports, and the ServerApp launcher."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from corolla.common.grpc import MAX_FAB_BYTES, bind, create_server
from corolla.common.transfer import add_service
from corolla.proto.v1 import exec_pb2, fleet_pb2, serverappio_pb2
from corolla.superlink.exec import ExecServicer
from corolla.superlink.fleet import FleetServicer
from corolla.superlink.launcher import ServerAppLauncher
from corolla.superlink.serverappio import ServerAppIoServicer
from corolla.superlink.state import LinkState, SqliteLinkState

log = logging.getLogger(__name__)

GRACE = 3.0


@dataclass(frozen=True)
class SuperLinkConfig:
    serverappio_address: str = "0.0.0.0:9091"
    fleet_address: str = "0.0.0.0:9092"
    exec_address: str = "0.0.0.0:9093"
    database: str = ":memory:"
    insecure: bool = True


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
        self._servers: list[grpc.Server] = []
        self.ports: dict[str, int] = {}
        self.launcher: ServerAppLauncher | None = None

    def start(self) -> None:
        serverappio = create_server()
        add_service(
            serverappio,
            serverappio_pb2.DESCRIPTOR.services_by_name["ServerAppIo"],
            ServerAppIoServicer(self.state),
        )
        self.ports["serverappio"] = bind(serverappio, self.config.serverappio_address, None)
        self.launcher = ServerAppLauncher(
            self.state, _local(self.config.serverappio_address, self.ports["serverappio"])
        )
        fleet = create_server(max_workers=256)
        add_service(
            fleet, fleet_pb2.DESCRIPTOR.services_by_name["Fleet"], FleetServicer(self.state)
        )
        self.ports["fleet"] = bind(fleet, self.config.fleet_address, None)
        fab_limit = [
            ("grpc.max_receive_message_length", MAX_FAB_BYTES),
            ("grpc.max_send_message_length", MAX_FAB_BYTES),
        ]
        exec_server = create_server(max_workers=32, options=fab_limit)
        add_service(
            exec_server,
            exec_pb2.DESCRIPTOR.services_by_name["Exec"],
            ExecServicer(self.state, self.launcher.notify),
        )
        self.ports["exec"] = bind(exec_server, self.config.exec_address, None)
        self._servers = [serverappio, fleet, exec_server]
        for server in self._servers:
            server.start()
        self.launcher.start()
        log.info(
            "SuperLink ready: serverappio=%s fleet=%s exec=%s",
            _local(self.config.serverappio_address, self.ports["serverappio"]),
            _local(self.config.fleet_address, self.ports["fleet"]),
            _local(self.config.exec_address, self.ports["exec"]),
        )

    def stop(self) -> None:
        """Graceful: stop accepting calls, end the app processes, close the state."""
        self.state.wake_all()
        events = [server.stop(GRACE) for server in self._servers]
        if self.launcher is not None:
            self.launcher.stop()
        for event in events:
            event.wait(GRACE + 1)
        self.state.close()
        log.info("SuperLink stopped")
