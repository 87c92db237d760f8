"""`StreamLogs` of a long log: several bounded responses, never one over the gRPC limit, and
the CLI prints every line however many responses they come in."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from corolla.cli.exec_client import ExecClient
from corolla.cli.follow import follow_logs, print_logs
from corolla.common.grpc import MAX_MESSAGE_BYTES, bind, create_server
from corolla.common.guard import add_service
from corolla.proto.v1 import exec_pb2
from corolla.superlink.access import ExecAccess
from corolla.superlink.exec import POLICY, ExecServicer
from corolla.superlink.runs import Runs
from corolla.superlink.state import SqliteLinkState
from corolla.superlink.state.base import MiB, StateLimits

pytestmark = pytest.mark.timeout(60)


@dataclass
class Served:
    state: SqliteLinkState
    client: ExecClient


@contextlib.contextmanager
def serve(limits: StateLimits) -> Iterator[Served]:
    state = SqliteLinkState(":memory:", limits=limits)
    server = create_server(max_workers=4)
    access = ExecAccess(state)
    servicer = ExecServicer(Runs(state), lambda: None, access=access)
    service = exec_pb2.DESCRIPTOR.services_by_name["Exec"]
    add_service(server, service, servicer, POLICY, access.authenticate)
    port = bind(server, "127.0.0.1:0", None)
    server.start()
    client = ExecClient(f"127.0.0.1:{port}", insecure=True)
    try:
        yield Served(state, client)
    finally:
        client.close()
        server.stop(None).wait(5)
        state.close()


@pytest.fixture
def small_batches() -> Iterator[Served]:
    with serve(StateLimits(log_batch_bytes=4096)) as served:
        yield served


def new_run(state: SqliteLinkState) -> int:
    return state.create_run(
        fab_id="acme/demo", fab_version="1", fab_hash="h", override_config={}, run_config={}
    )


def test_a_long_log_comes_in_bounded_batches(small_batches: Served) -> None:
    state, client = small_batches.state, small_batches.client
    run_id = new_run(state)
    text = [f"line {i:05d} " + "x" * 90 for i in range(2000)]  # 100 bytes each, ~200 KiB
    state.append_logs(run_id, text)
    batches = list(client.stream_logs(run_id, follow=False))
    assert len(batches) >= 2000 * 108 // 4096
    assert all(sum(len(line) + 8 for line in batch.lines) <= 4096 for batch in batches)
    assert [line for batch in batches for line in batch.lines] == text
    assert batches[-1].next == 2000
    [at_the_end] = client.stream_logs(run_id, after=2000, follow=False)
    assert (at_the_end.lines, at_the_end.next) == ((), 2000)


def test_the_cli_prints_every_line_of_a_log_in_many_batches(
    small_batches: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    state, client = small_batches.state, small_batches.client
    run_id = new_run(state)
    text = [f"output {i}" for i in range(3000)]
    state.append_logs(run_id, text)
    print_logs(client, run_id)
    assert capsys.readouterr().out.splitlines() == text
    assert Runs(state).stop(run_id)  # finished: `--follow` prints the lot and returns
    status = follow_logs(client, run_id)
    assert capsys.readouterr().out.splitlines() == [*text, "run stopped: stopped by user"]
    assert (status.status, status.sub_status) == ("finished", "stopped")


def test_a_log_over_the_grpc_limit_streams_in_1_mib_responses() -> None:
    total = 70 * MiB  # over the 64 MiB a single response may take
    assert total > MAX_MESSAGE_BYTES
    with serve(StateLimits(max_run_log_bytes=128 * MiB)) as served:
        run_id = new_run(served.state)
        line = "z" * 1016
        for _ in range(total // MiB):
            served.state.append_logs(run_id, [line] * 1024)
        received = count = 0
        for batch in served.client.stream_logs(run_id, follow=False):
            size = sum(len(text) + 8 for text in batch.lines)
            assert size <= MiB
            received += size
            count += len(batch.lines)
        assert count == 70 * 1024
        assert received == total
