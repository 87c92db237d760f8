"""Followed log streams hold Exec threads for as long as a run lasts: beyond MAX_FOLLOWERS of
them the next is refused (RESOURCE_EXHAUSTED) and unary Exec calls keep answering; a cancelled
follower gives its slot back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from corolla.common.grpc import create_channel
from corolla.proto.v1 import exec_pb2, exec_pb2_grpc
from corolla.superlink.config import SuperLinkConfig
from corolla.superlink.exec import MAX_FOLLOWERS
from corolla.superlink.link import SuperLink
from corolla.superlink.state import RunStatus

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def link() -> Iterator[SuperLink]:
    link = SuperLink(
        SuperLinkConfig(
            serverappio_address="127.0.0.1:0",
            fleet_address="127.0.0.1:0",
            exec_address="127.0.0.1:0",
            app_heartbeat_timeout=3600.0,
            app_start_timeout=3600.0,
        )
    )
    link.start()
    yield link
    link.stop()


def test_followers_beyond_the_cap_are_refused_and_unary_calls_go_on(link: SuperLink) -> None:
    state = link.state
    run_id = state.create_run(
        fab_id="p/a", fab_version="1", fab_hash="f" * 64, override_config={}, run_config={}
    )
    state.update_run_status(run_id, RunStatus.STARTING)  # running, no ServerApp behind it
    state.append_logs(run_id, ["first line"])
    follow = exec_pb2.StreamLogsRequest(run_id=run_id, follow=True)
    with create_channel(link.addresses["exec"], insecure=True) as channel:
        stub = exec_pb2_grpc.ExecStub(channel)
        streams = [stub.StreamLogs(follow, timeout=30) for _ in range(MAX_FOLLOWERS)]
        for stream in streams:
            assert list(next(stream).lines) == ["first line"]  # it holds a slot now
        with pytest.raises(grpc.RpcError) as refused:
            next(stub.StreamLogs(follow, timeout=30))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "followed log streams" in refused.value.details()
        started = time.monotonic()
        listed = stub.ListRuns(exec_pb2.ListRunsRequest(), timeout=10)
        assert [run.run_id for run in listed.runs] == [run_id]
        assert time.monotonic() - started < 5  # not queued behind the followers
        plain = stub.StreamLogs(exec_pb2.StreamLogsRequest(run_id=run_id), timeout=10)
        assert [line for r in plain for line in r.lines] == ["first line"]  # no slot needed
        for stream in streams:
            stream.cancel()
        deadline = time.monotonic() + 20
        while True:  # the server notices the cancellations on its next poll
            try:
                again = stub.StreamLogs(follow, timeout=30)
                assert list(next(again).lines) == ["first line"]
                again.cancel()
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline, "slots were not given back"
                time.sleep(0.05)
