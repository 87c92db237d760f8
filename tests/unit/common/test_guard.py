"""Deny by default: every RPC of every served API has a policy entry, and the guard parses and
authenticates before a servicer runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from corolla.common.errors import Unauthenticated
from corolla.common.grpc import bind, create_channel, create_server
from corolla.common.guard import Caller, CallInfo, Credential, add_service, check_policy
from corolla.proto.v1 import clientappio_pb2, exec_pb2, fleet_pb2, serverappio_pb2
from corolla.superlink import access, fleet, serverappio
from corolla.superlink import exec as exec_api
from corolla.supernode import clientappio

pytestmark = pytest.mark.timeout(30)

SERVICES = [
    (fleet_pb2.DESCRIPTOR.services_by_name["Fleet"], fleet.POLICY),
    (serverappio_pb2.DESCRIPTOR.services_by_name["ServerAppIo"], serverappio.POLICY),
    (exec_pb2.DESCRIPTOR.services_by_name["Exec"], exec_api.POLICY),
    (clientappio_pb2.DESCRIPTOR.services_by_name["ClientAppIo"], clientappio.POLICY),
]


@pytest.mark.parametrize(("service", "policy"), SERVICES, ids=lambda s: getattr(s, "name", ""))
def test_every_method_of_every_service_has_a_policy(service: Any, policy: Any) -> None:
    check_policy(service, policy)  # raises on a method without an entry
    assert set(policy) == {method.name for method in service.methods}


def test_every_exec_method_names_the_roles_it_needs() -> None:
    service = exec_pb2.DESCRIPTOR.services_by_name["Exec"]
    assert set(access.ROLES) == {method.name for method in service.methods}
    public = {name for name, credential in exec_api.POLICY.items() if credential.name == "PUBLIC"}
    assert public == {name for name, roles in access.ROLES.items() if roles is None}


def test_a_method_without_a_policy_cannot_be_served() -> None:
    service = fleet_pb2.DESCRIPTOR.services_by_name["Fleet"]
    partial = {k: v for k, v in fleet.POLICY.items() if k != "PushLogs"}
    with pytest.raises(ValueError, match="PushLogs"):
        check_policy(service, partial)
    with pytest.raises(ValueError, match="PushLogs"):
        add_service(create_server(max_workers=2), service, object(), partial, _allow)


def _allow(credential: Credential, call: CallInfo) -> Caller:
    if call.metadata.get("who") != "friend":
        raise Unauthenticated("not a friend")
    return Caller(credential, node_id=7)


class Echo:
    """A Fleet servicer that records who called (only Heartbeat is used)."""

    def __init__(self) -> None:
        self.callers: list[Caller] = []

    def __getattr__(self, name: str) -> Any:
        def method(request: Any, context: Any) -> Any:
            self.callers.append(context.caller)
            return fleet_pb2.HeartbeatResponse(success=True)

        return method


@pytest.fixture
def served() -> Iterator[tuple[Echo, grpc.Channel]]:
    server = create_server(max_workers=4)
    echo = Echo()
    add_service(server, fleet_pb2.DESCRIPTOR.services_by_name["Fleet"], echo, fleet.POLICY, _allow)
    port = bind(server, "127.0.0.1:0", None)
    server.start()
    channel = create_channel(f"127.0.0.1:{port}", insecure=True)
    yield echo, channel
    channel.close()
    server.stop(0).wait(5)


def _raw_heartbeat(channel: grpc.Channel) -> Any:
    return channel.unary_unary(
        "/corolla.proto.v1.Fleet/Heartbeat",
        request_serializer=None,
        response_deserializer=fleet_pb2.HeartbeatResponse.FromString,
    )


def test_refused_and_malformed_calls_never_reach_the_servicer(
    served: tuple[Echo, grpc.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    echo, channel = served
    call = _raw_heartbeat(channel)
    good = fleet_pb2.HeartbeatRequest(node_id=7, heartbeat_interval=5).SerializeToString()
    with pytest.raises(grpc.RpcError) as stranger:
        call(good, metadata=[("who", "stranger")], timeout=5)
    assert stranger.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as garbage:
        call(b"\xff\xff\xff\xff", metadata=[("who", "friend")], timeout=5)
    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed request" in garbage.value.details()
    too_big = fleet_pb2.HeartbeatRequest(node_id=2**64 - 1).SerializeToString()
    with pytest.raises(grpc.RpcError) as out_of_range:
        call(too_big, metadata=[("who", "friend")], timeout=5)
    assert out_of_range.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "out of range" in out_of_range.value.details()
    assert echo.callers == []
    assert not any(record.exc_info for record in caplog.records)  # one line, no traceback
    call(good, metadata=[("who", "friend")], timeout=5)
    assert echo.callers == [Caller(Credential.NODE, node_id=7)]
