"""SuperNode authentication, tried as an attacker on the same network would: a real SuperLink
with ``--enable-supernode-auth`` on loopback, keys made per test, every call on the wire."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from corolla.common import nodekeys
from corolla.common.grpc import create_channel
from corolla.common.protocol import MAX_HEARTBEAT_INTERVAL
from corolla.common.transfer import NODE_ID_KEY
from corolla.proto.v1 import exec_pb2, exec_pb2_grpc, fleet_pb2, fleet_pb2_grpc, run_pb2
from corolla.superlink.config import SuperLinkConfig
from corolla.superlink.link import SuperLink
from corolla.superlink.state import RunStatus

pytestmark = pytest.mark.timeout(60)

FLEET = "/corolla.proto.v1.Fleet/"


@dataclass
class Harness:
    link: SuperLink
    fleet: fleet_pb2_grpc.FleetStub
    exec: exec_pb2_grpc.ExecStub


@pytest.fixture
def harness() -> Iterator[Harness]:
    link = SuperLink(
        SuperLinkConfig(
            serverappio_address="127.0.0.1:0",
            fleet_address="127.0.0.1:0",
            exec_address="127.0.0.1:0",
            database=":memory:",
            enable_supernode_auth=True,
            app_heartbeat_timeout=3600.0,
        )
    )
    link.start()
    fleet = create_channel(link.addresses["fleet"], insecure=True)
    exec_ = create_channel(link.addresses["exec"], insecure=True)
    try:
        yield Harness(link, fleet_pb2_grpc.FleetStub(fleet), exec_pb2_grpc.ExecStub(exec_))
    finally:
        fleet.close()
        exec_.close()
        link.stop()


def register(h: Harness, key: nodekeys.PrivateKey) -> int:
    der = nodekeys.public_der(key.public_key())
    pem = nodekeys.load_public_key_der(der).public_bytes(
        nodekeys.serialization.Encoding.PEM,
        nodekeys.serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    response = h.exec.RegisterNode(exec_pb2.RegisterNodeRequest(public_key=pem), timeout=10)
    return int(response.node_id)


def signed(
    key: nodekeys.PrivateKey,
    method: str,
    request: Any,
    *,
    timestamp: float | None = None,
    nonce: str | None = None,
    body: bytes | None = None,
) -> list[tuple[str, str]]:
    """The metadata a SuperNode sends with ``request`` (``body``: sign other bytes)."""
    ts = f"{time.time() if timestamp is None else timestamp:.6f}"
    nonce = nonce or secrets.token_urlsafe(16)
    payload = nodekeys.signed_payload(
        FLEET + method, ts, nonce, request.SerializeToString() if body is None else body
    )
    return [
        (nodekeys.FINGERPRINT_KEY, nodekeys.fingerprint(nodekeys.public_der(key.public_key()))),
        (nodekeys.TIMESTAMP_KEY, ts),
        (nodekeys.NONCE_KEY, nonce),
        (nodekeys.SIGNATURE_KEY, nodekeys.b64(nodekeys.sign(key, payload))),
    ]


def call(h: Harness, key: nodekeys.PrivateKey, method: str, request: Any, **kw: Any) -> Any:
    return getattr(h.fleet, method)(
        request, metadata=signed(key, method, request, **kw), timeout=10
    )


def code_of(exc: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return exc.value.code()  # type: ignore[no-any-return]  # grpc's errors are untyped


def joined(h: Harness, key: nodekeys.PrivateKey) -> int:
    node_id = register(h, key)
    request = fleet_pb2.CreateNodeRequest(heartbeat_interval=5)
    assert call(h, key, "CreateNode", request).node_id == node_id
    return node_id


def test_unsigned_and_unknown_nodes_cannot_join(harness: Harness) -> None:
    request = fleet_pb2.CreateNodeRequest(heartbeat_interval=3600)
    with pytest.raises(grpc.RpcError) as unsigned:
        harness.fleet.CreateNode(request, timeout=10)
    assert code_of(unsigned) == grpc.StatusCode.UNAUTHENTICATED
    assert "--auth-supernode-private-key" in unsigned.value.details()
    stranger = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(grpc.RpcError) as unknown:
        call(harness, stranger, "CreateNode", request)
    assert code_of(unknown) == grpc.StatusCode.UNAUTHENTICATED
    assert "unknown SuperNode key" in unknown.value.details()
    assert harness.link.state.online_node_ids() == []  # no ghost to sample


@pytest.mark.parametrize("kind", ["ecdsa", "ed25519"])
def test_a_registered_key_joins_with_the_id_bound_to_it(harness: Harness, kind: str) -> None:
    key: nodekeys.PrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if kind == "ecdsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    node_id = register(harness, key)
    request = fleet_pb2.CreateNodeRequest(heartbeat_interval=5, requested_node_id=12345)
    assert call(harness, key, "CreateNode", request).node_id == node_id  # not 12345
    assert harness.link.state.online_node_ids() == [node_id]


def test_stale_replayed_and_tampered_requests_are_refused(harness: Harness) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    node_id = joined(harness, key)
    beat = fleet_pb2.HeartbeatRequest(node_id=node_id, heartbeat_interval=5)
    with pytest.raises(grpc.RpcError) as stale:
        call(harness, key, "Heartbeat", beat, timestamp=time.time() - 3600)
    assert code_of(stale) == grpc.StatusCode.UNAUTHENTICATED
    assert "timestamp" in stale.value.details()

    metadata = signed(key, "Heartbeat", beat)
    harness.fleet.Heartbeat(beat, metadata=metadata, timeout=10)
    with pytest.raises(grpc.RpcError) as replay:
        harness.fleet.Heartbeat(beat, metadata=metadata, timeout=10)
    assert code_of(replay) == grpc.StatusCode.UNAUTHENTICATED
    assert "replayed" in replay.value.details()

    knock_out = fleet_pb2.HeartbeatRequest(node_id=node_id, heartbeat_interval=0.05)
    with pytest.raises(grpc.RpcError) as tampered:
        call(harness, key, "Heartbeat", knock_out, body=beat.SerializeToString())
    assert code_of(tampered) == grpc.StatusCode.UNAUTHENTICATED
    assert "signature" in tampered.value.details()


def test_no_node_can_act_as_another(harness: Harness) -> None:
    alice, mallory = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    alice_id, mallory_id = joined(harness, alice), joined(harness, mallory)
    link = harness.link
    run_id = link.state.create_run(
        fab_id="p/a", fab_version="1", fab_hash="f" * 64, override_config={}, run_config={}
    )
    link.state.update_run_status(run_id, RunStatus.STARTING)
    as_alice: list[Any] = [
        ("Heartbeat", fleet_pb2.HeartbeatRequest(node_id=alice_id, heartbeat_interval=0.05)),
        ("DeleteNode", fleet_pb2.DeleteNodeRequest(node_id=alice_id)),
        ("PullMessages", fleet_pb2.FleetPullMessagesRequest(node_id=alice_id)),
        ("GetRun", run_pb2.GetRunRequest(node_id=alice_id, run_id=run_id)),
    ]
    for method, request in as_alice:
        with pytest.raises(grpc.RpcError) as denied:
            call(harness, mallory, method, request)
        assert code_of(denied) == grpc.StatusCode.PERMISSION_DENIED, method
        assert f"cannot act as node {alice_id}" in denied.value.details()
    # Mallory as herself still cannot read a run she was never sent work of.
    with pytest.raises(grpc.RpcError) as scoped:
        call(harness, mallory, "GetRun", run_pb2.GetRunRequest(node_id=mallory_id, run_id=run_id))
    assert code_of(scoped) == grpc.StatusCode.PERMISSION_DENIED
    assert sorted(link.state.online_node_ids()) == sorted([alice_id, mallory_id])


def stream_metadata(key: nodekeys.PrivateKey, node_id: int) -> list[tuple[str, str]]:
    """A SuperNode's `Connect` metadata: signed as it opens (no body; the node id signed)."""
    ts, nonce = f"{time.time():.6f}", secrets.token_urlsafe(16)
    payload = nodekeys.signed_payload(FLEET + "Connect", ts, nonce, b"", str(node_id), "")
    return [
        (NODE_ID_KEY, str(node_id)),
        (nodekeys.FINGERPRINT_KEY, nodekeys.fingerprint(nodekeys.public_der(key.public_key()))),
        (nodekeys.TIMESTAMP_KEY, ts),
        (nodekeys.NONCE_KEY, nonce),
        (nodekeys.SIGNATURE_KEY, nodekeys.b64(nodekeys.sign(key, payload))),
    ]


def test_a_node_stream_is_signed_when_it_opens_and_only_by_its_node(harness: Harness) -> None:
    alice, mallory = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    alice_id, _ = joined(harness, alice), joined(harness, mallory)

    def stream(metadata: list[tuple[str, str]]) -> list[Any]:
        beat = fleet_pb2.NodeUp(beat=1, heartbeat_interval=5)
        return list(harness.fleet.Connect(iter([beat]), metadata=metadata, timeout=10))

    with pytest.raises(grpc.RpcError) as unsigned:
        stream([(NODE_ID_KEY, str(alice_id))])
    assert code_of(unsigned) == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as impostor:
        mallory_as_alice = stream_metadata(mallory, alice_id)
        stream(mallory_as_alice)
    assert code_of(impostor) == grpc.StatusCode.PERMISSION_DENIED
    assert f"cannot act as node {alice_id}" in impostor.value.details()
    metadata = stream_metadata(alice, alice_id)
    assert [down.beat for down in stream(metadata)] == [1]  # answered on her own stream
    with pytest.raises(grpc.RpcError) as replay:
        stream(metadata)
    assert code_of(replay) == grpc.StatusCode.UNAUTHENTICATED


def test_unregistering_takes_effect_on_the_next_request(harness: Harness) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    node_id = joined(harness, key)
    listed = harness.exec.ListNodes(exec_pb2.ListNodesRequest(), timeout=10).nodes
    assert [(n.node_id, n.online) for n in listed] == [(node_id, True)]
    assert listed[0].fingerprint.startswith("sha256:") and listed[0].last_seen > 0
    harness.exec.UnregisterNode(exec_pb2.UnregisterNodeRequest(node_id=node_id), timeout=10)
    beat = fleet_pb2.HeartbeatRequest(node_id=node_id, heartbeat_interval=5)
    with pytest.raises(grpc.RpcError) as refused:
        call(harness, key, "Heartbeat", beat)
    assert code_of(refused) == grpc.StatusCode.UNAUTHENTICATED
    assert harness.exec.ListNodes(exec_pb2.ListNodesRequest(), timeout=10).nodes == []


def test_heartbeat_intervals_and_waits_out_of_range_are_refused(harness: Harness) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    node_id = joined(harness, key)
    for interval in (1e300, float("nan"), float("inf"), -1.0, MAX_HEARTBEAT_INTERVAL * 2):
        with pytest.raises(grpc.RpcError) as bad:
            call(
                harness,
                key,
                "Heartbeat",
                fleet_pb2.HeartbeatRequest(node_id=node_id, heartbeat_interval=interval),
            )
        assert code_of(bad) == grpc.StatusCode.INVALID_ARGUMENT, interval
    for wait in (float("nan"), float("inf"), -5.0):
        request = fleet_pb2.FleetPullMessagesRequest(node_id=node_id, wait_seconds=wait)
        with pytest.raises(grpc.RpcError) as bad:
            call(harness, key, "PullMessages", request)
        assert code_of(bad) == grpc.StatusCode.INVALID_ARGUMENT, wait


def test_a_key_registers_once_and_bad_keys_are_clear_errors(harness: Harness) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    register(harness, key)
    with pytest.raises(grpc.RpcError) as twice:
        register(harness, key)
    assert code_of(twice) == grpc.StatusCode.ALREADY_EXISTS
    for junk in (b"", b"not a key", nodekeys.b64(b"x" * 40).encode()):
        with pytest.raises(grpc.RpcError) as bad:
            harness.exec.RegisterNode(exec_pb2.RegisterNodeRequest(public_key=junk), timeout=10)
        assert code_of(bad) == grpc.StatusCode.INVALID_ARGUMENT
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    pem = p384.public_bytes(
        nodekeys.serialization.Encoding.PEM,
        nodekeys.serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    with pytest.raises(grpc.RpcError) as curve:
        harness.exec.RegisterNode(exec_pb2.RegisterNodeRequest(public_key=pem), timeout=10)
    assert "P-256" in curve.value.details()


def _run_with_instruction(h: Harness, node_id: int) -> tuple[int, str, str]:
    """A running run whose one instruction (to ``node_id``) carries a large array: returns
    the run id, its FAB hash and the array's object id."""
    import numpy as np

    from corolla.records import ArrayRecord, Message, RecordDict
    from corolla.records.wire import encode_messages
    from corolla.superlink.messages import to_stored

    state = h.link.state
    fab_hash = secrets.token_hex(32)
    state.store_fab(fab_hash, b"fab")
    run_id = state.create_run(
        fab_id="p/a", fab_version="1", fab_hash=fab_hash, override_config={}, run_config={}
    )
    state.update_run_status(run_id, RunStatus.STARTING)
    arrays = ArrayRecord.from_numpy_ndarrays([np.random.default_rng().random(100_000)])
    message = Message(RecordDict({"arrays": arrays}), dst_node_id=node_id, message_type="train")
    message.metadata.run_id = run_id
    protos, objects = encode_messages([message])
    for object_id, data in objects.items():
        state.store_object(run_id, object_id, data)
    state.store_instructions([to_stored(protos[0], state)])
    return run_id, fab_hash, next(iter(objects))


def test_a_node_reads_only_what_its_instructions_reference(harness: Harness) -> None:
    alice, mallory = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    alice_id, mallory_id = joined(harness, alice), joined(harness, mallory)
    run_id, fab_hash, object_id = _run_with_instruction(harness, alice_id)
    _, _, other_object = _run_with_instruction(harness, mallory_id)  # another run's object
    from corolla.proto.v1 import objects_pb2

    def pull(key: nodekeys.PrivateKey, node_id: int, oid: str) -> list[Any]:
        request = objects_pb2.PullObjectsRequest(node_id=node_id, run_id=run_id, object_ids=[oid])
        return list(call(harness, key, "PullObjects", request))

    assert pull(alice, alice_id, object_id)  # her instruction references it
    assert call(harness, alice, "GetRun", run_pb2.GetRunRequest(node_id=alice_id, run_id=run_id))
    fab = run_pb2.GetFabRequest(node_id=alice_id, run_id=run_id, fab_hash=fab_hash)
    assert call(harness, alice, "GetFab", fab).fab.content == b"fab"
    with pytest.raises(grpc.RpcError) as unrelated:
        pull(alice, alice_id, other_object)
    assert code_of(unrelated) == grpc.StatusCode.NOT_FOUND
    mallory_calls: list[tuple[str, Any]] = [
        ("GetFab", run_pb2.GetFabRequest(node_id=mallory_id, run_id=run_id, fab_hash=fab_hash)),
        (
            "PushLogs",
            fleet_pb2.FleetPushLogsRequest(node_id=mallory_id, run_id=run_id, lines=["x"]),
        ),
        ("MissingObjects", objects_pb2.MissingObjectsRequest(node_id=mallory_id, run_id=run_id)),
    ]
    for method, request in mallory_calls:
        with pytest.raises(grpc.RpcError) as denied:
            call(harness, mallory, method, request)
        assert code_of(denied) == grpc.StatusCode.PERMISSION_DENIED, method
    with pytest.raises(grpc.RpcError) as stolen:
        pull(mallory, mallory_id, object_id)
    assert code_of(stolen) == grpc.StatusCode.PERMISSION_DENIED
    assert harness.link.state.get_logs(run_id)[0] == []  # nothing written by mallory


def test_a_run_token_reads_only_its_own_runs_objects(harness: Harness) -> None:
    from corolla.proto.v1 import objects_pb2, serverappio_pb2_grpc

    key = ec.generate_private_key(ec.SECP256R1())
    node_id = joined(harness, key)
    run_a, _, object_a = _run_with_instruction(harness, node_id)
    _, _, object_b = _run_with_instruction(harness, node_id)
    token = harness.link.state.create_token(run_a)
    with create_channel(harness.link.addresses["serverappio"], insecure=True) as channel:
        stub = serverappio_pb2_grpc.ServerAppIoStub(channel)
        mine = objects_pb2.PullObjectsRequest(token=token, object_ids=[object_a])
        assert list(stub.PullObjects(mine, timeout=10))
        theirs = objects_pb2.PullObjectsRequest(token=token, object_ids=[object_b])
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.PullObjects(theirs, timeout=10))
        assert code_of(refused) == grpc.StatusCode.NOT_FOUND
        missing = objects_pb2.MissingObjectsRequest(token=token, object_ids=[object_a, object_b])
        assert list(stub.MissingObjects(missing, timeout=10).object_ids) == [object_b]
        with pytest.raises(grpc.RpcError) as no_token:
            list(
                stub.PullObjects(objects_pb2.PullObjectsRequest(object_ids=[object_a]), timeout=10)
            )
        assert code_of(no_token) == grpc.StatusCode.UNAUTHENTICATED


def test_serverappio_waits_that_are_not_finite_numbers_are_refused(harness: Harness) -> None:
    from corolla.proto.v1 import serverappio_pb2, serverappio_pb2_grpc

    key = ec.generate_private_key(ec.SECP256R1())
    run_id, _, _ = _run_with_instruction(harness, joined(harness, key))
    token = harness.link.state.create_token(run_id)
    with create_channel(harness.link.addresses["serverappio"], insecure=True) as channel:
        stub = serverappio_pb2_grpc.ServerAppIoStub(channel)
        for wait in (float("nan"), float("inf"), -1.0):
            request = serverappio_pb2.PullMessagesRequest(
                token=token, run_id=run_id, wait_seconds=wait
            )
            with pytest.raises(grpc.RpcError) as refused:
                stub.PullMessages(request, timeout=10)
            assert code_of(refused) == grpc.StatusCode.INVALID_ARGUMENT, wait
