"""A long-lived call with nothing to say survives many keepalive intervals on both ends.

The keepalive interval is shortened (COROLLA_GRPC_KEEPALIVE_SECONDS) so that the test sees
many pings in a few seconds; with client pings stricter than the server allows, the server
would end the stream with "too many pings" after the second or third.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from corolla.cli.exec_client import ExecClient, LogBatch
from corolla.superlink.config import SuperLinkConfig
from corolla.superlink.link import SuperLink
from corolla.superlink.state import RunStatus

pytestmark = pytest.mark.timeout(60)

KEEPALIVE = 0.25
QUIET = 12 * KEEPALIVE * 2  # many intervals with no data on the stream


@pytest.fixture
def link(monkeypatch: pytest.MonkeyPatch) -> Iterator[SuperLink]:
    monkeypatch.setenv("COROLLA_GRPC_KEEPALIVE_SECONDS", str(KEEPALIVE))
    superlink = SuperLink(
        SuperLinkConfig(
            serverappio_address="127.0.0.1:0",
            fleet_address="127.0.0.1:0",
            exec_address="127.0.0.1:0",
            app_heartbeat_timeout=600,
        )
    )
    superlink.start()
    yield superlink
    superlink.stop()


def test_a_quiet_log_stream_outlives_many_keepalive_intervals(link: SuperLink) -> None:
    state = link.state
    state.store_fab("f" * 64, b"fab")
    run_id = state.create_run(
        fab_id="p/app", fab_version="1", fab_hash="f" * 64, override_config={}, run_config={}
    )
    state.update_run_status(run_id, RunStatus.STARTING)  # nothing will launch or log
    state.update_run_status(run_id, RunStatus.RUNNING)
    batches: list[LogBatch] = []
    errors: list[BaseException] = []

    def follow() -> None:
        with ExecClient(link.addresses["exec"], insecure=True) as client:
            try:
                batches.extend(client.stream_logs(run_id, follow=True))
            except BaseException as exc:
                errors.append(exc)

    thread = threading.Thread(target=follow)
    thread.start()
    time.sleep(QUIET)  # the stream has nothing to say for many keepalive intervals
    assert thread.is_alive(), f"the stream ended early: {errors}"
    link.runs.stop(run_id)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert errors == []
    assert batches and batches[-1].status is not None
    assert batches[-1].status.sub_status == "stopped"
