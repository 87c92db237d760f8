"""Hostile input on every RPC of the four services: random bytes, truncated and oversized
protobufs, wrong ids, bad tokens, lying object frames, cancelled streams. The daemons must
answer each with a status (never crash), stay healthy, keep their memory, and still run an app.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from integration_helpers import APPS, Cli

from corolla.common.grpc import create_channel
from corolla.common.objects import encode_chunk
from corolla.deploy.local import LocalFederation, app_for_federation
from corolla.proto.v1 import clientappio_pb2, exec_pb2, fleet_pb2, serverappio_pb2

pytestmark = pytest.mark.timeout(240)

REQUESTS_PER_METHOD = 50  # 46 methods: about 2,300 hostile calls
MAX_RSS_GROWTH = 150 * 1024 * 1024
SERVICES = {
    "fleet": fleet_pb2.DESCRIPTOR.services_by_name["Fleet"],
    "serverappio": serverappio_pb2.DESCRIPTOR.services_by_name["ServerAppIo"],
    "exec": exec_pb2.DESCRIPTOR.services_by_name["Exec"],
    "clientappio": clientappio_pb2.DESCRIPTOR.services_by_name["ClientAppIo"],
}
BIG_ID = 2**64 - 1


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def hostile_bodies(method: Any, rng: random.Random) -> Iterator[bytes]:
    """Request bodies for ``method``: garbage, truncations, huge and out-of-range fields."""
    cls = message_factory.GetMessageClass(method.input_type)
    fields = list(cls.DESCRIPTOR.fields)
    for i in range(REQUESTS_PER_METHOD):
        kind = i % 5
        if kind == 0:
            yield rng.randbytes(rng.randint(0, 512))
            continue
        request = cls()
        for field in fields:
            name = field.name
            if field.type == field.TYPE_MESSAGE or field.is_repeated:
                if field.is_repeated and field.type == field.TYPE_UINT64:
                    getattr(request, name).extend(rng.choice([0, 1, BIG_ID]) for _ in range(50))
                elif field.is_repeated and field.type == field.TYPE_STRING:
                    getattr(request, name).extend("x" * rng.randint(0, 200) for _ in range(20))
                continue
            if field.type == field.TYPE_UINT64:
                setattr(request, name, rng.choice([0, 1, 2**63 - 1, 2**63, BIG_ID]))
            elif field.type == field.TYPE_DOUBLE:
                setattr(request, name, rng.choice([float("nan"), float("inf"), -1.0, 1e300]))
            elif field.type == field.TYPE_STRING:
                setattr(request, name, rng.choice(["", "x" * 100_000, "\u0000bad", "t" * 43]))
            elif field.type == field.TYPE_BYTES:
                setattr(request, name, rng.randbytes(rng.randint(0, 4096)))
            elif field.type == field.TYPE_BOOL:
                setattr(request, name, rng.random() < 0.5)
        body = request.SerializeToString()
        if kind == 2 and body:
            body = body[: rng.randint(0, len(body) - 1)]  # truncated
        elif kind == 3:
            body += rng.randbytes(16)  # trailing garbage
        yield body


def hostile_frames(rng: random.Random) -> list[bytes]:
    """Object chunk streams that lie: huge declared sizes, gaps, overflow, bad ids."""
    oid = "ab" * 32
    return rng.choice(
        [
            [encode_chunk(oid, 0, 64 * 1024**3, b"x" * 10)],  # declares 64 GiB
            [encode_chunk(oid, 0, 10, b"x" * 5), encode_chunk(oid, 7, 10, b"y" * 3)],  # gap
            [encode_chunk(oid, 0, 4, b"x" * 9)],  # more than declared
            [encode_chunk(oid, 0, 3, b"abc")],  # content does not match the id
            [rng.randbytes(rng.randint(1, 300))],
            [encode_chunk(oid, 0, 10, b"x" * 5)],  # never finished
        ]
    )


def fire(channel: grpc.Channel, service: Any, rng: random.Random) -> Counter:
    counts = Counter()
    metadata_options = [
        (),
        (("corolla-token", "bogus"),),
        (("corolla-node-id", str(BIG_ID)), ("corolla-run-id", "nope")),
        (("corolla-auth-key", "sha256:00"), ("corolla-auth-sig", "!!!")),
    ]
    for method in service.methods:
        path = f"/{service.full_name}/{method.name}"
        for body in hostile_bodies(method, rng):
            metadata = rng.choice(metadata_options)
            if method.client_streaming:
                stream = channel.stream_unary(path, request_serializer=None)
                frames = hostile_frames(rng) if rng.random() < 0.8 else [body]
                counts.record(stream, iter(frames), metadata=metadata, timeout=5)
            elif method.server_streaming:
                call = channel.unary_stream(path, request_serializer=None)
                responses = call(body, metadata=metadata, timeout=5)
                if rng.random() < 0.5:
                    responses.cancel()  # a cancelled stream
                counts.record(list, responses)
            else:
                unary = channel.unary_unary(path, request_serializer=None)
                counts.record(unary, body, metadata=metadata, timeout=5)
    return counts


class Counter:
    def __init__(self) -> None:
        self.calls = 0
        self.codes: dict[grpc.StatusCode, int] = {}
        self._lock = threading.Lock()

    def record(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        code = grpc.StatusCode.OK
        try:
            call(*args, **kwargs)
        except grpc.RpcError as exc:
            code = exc.code()
        with self._lock:
            self.calls += 1
            self.codes[code] = self.codes.get(code, 0) + 1


def test_two_thousand_hostile_requests_harm_nothing(tmp_path: Path) -> None:
    fed = LocalFederation(tmp_path / "fed", num_nodes=2)
    try:
        fed.start()
        addresses = {
            "fleet": fed.fleet,
            "serverappio": fed.serverappio,
            "exec": fed.exec,
            "clientappio": fed.clientappio_address(0),
        }
        assert fed.superlink is not None
        daemons = [fed.superlink.process, *(node.process for node in fed.supernodes)]
        before = {d.pid: rss(d.pid) for d in daemons}
        channels = {
            name: create_channel(address, insecure=True) for name, address in addresses.items()
        }
        try:
            jobs = [
                (channels[name], service, random.Random(f"{name}-{seed}"))
                for name, service in SERVICES.items()
                for seed in range(2)
            ]
            with ThreadPoolExecutor(max_workers=8) as pool:
                results = list(pool.map(lambda job: fire(*job), jobs))
        finally:
            for channel in channels.values():
                channel.close()
        total = sum(r.calls for r in results)
        codes: dict[grpc.StatusCode, int] = {}
        for r in results:
            for code, n in r.codes.items():
                codes[code] = codes.get(code, 0) + n
        assert total >= 2000
        assert codes.get(grpc.StatusCode.INTERNAL, 0) == 0, codes
        assert codes.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > total // 3, codes
        assert codes.get(grpc.StatusCode.UNAUTHENTICATED, 0) > 0, codes
        assert codes.get(grpc.StatusCode.UNKNOWN, 0) == 0, codes
        for daemon in daemons:
            assert daemon.poll() is None, "a daemon exited under hostile input"
            assert rss(daemon.pid) - before[daemon.pid] < MAX_RSS_GROWTH
        # Healthy afterwards: a normal run completes.
        cli = Cli(fed, app_for_federation(APPS / "probe", tmp_path / "probe", fed.exec))
        run_id = cli.submit("num-server-rounds=1")
        assert cli.wait_for(run_id, "finished", timeout=120)["sub_status"] == "completed"
        for log_name in ("superlink", "supernode-0"):
            text = (fed.workdir / f"{log_name}.log").read_text(errors="replace")
            assert "Traceback" not in text, text[-3000:]
    finally:
        fed.stop()
