"""Every RPC of every service has a handler (and nothing else looks like one)."""

from __future__ import annotations

import pytest

from corolla.proto.v1 import clientappio_pb2, exec_pb2, fleet_pb2, serverappio_pb2
from corolla.superlink.exec import ExecServicer
from corolla.superlink.fleet import FleetServicer
from corolla.superlink.serverappio import ServerAppIoServicer
from corolla.supernode.clientappio import ClientAppIoServicer

CASES = [
    (fleet_pb2, "Fleet", FleetServicer),
    (serverappio_pb2, "ServerAppIo", ServerAppIoServicer),
    (exec_pb2, "Exec", ExecServicer),
    (clientappio_pb2, "ClientAppIo", ClientAppIoServicer),
]


@pytest.mark.parametrize(("module", "service", "servicer"), CASES)
def test_servicer_implements_exactly_the_service(
    module: object, service: str, servicer: type
) -> None:
    methods = {m.name for m in module.DESCRIPTOR.services_by_name[service].methods}  # type: ignore[attr-defined]
    public = {name for name in vars(servicer) if name[:1].isupper()}
    assert public == methods
