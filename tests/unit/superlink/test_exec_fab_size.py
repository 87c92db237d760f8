"""The Exec server's message limit follows --max-fab-bytes: the SuperLink, not a constant,
decides how large a FAB may be, and an oversized one gets the clear error of the FAB check."""

from __future__ import annotations

import grpc
import pytest

from corolla.common.grpc import create_channel
from corolla.fab.limits import FabLimits, MiB
from corolla.proto.v1 import exec_pb2, exec_pb2_grpc, run_pb2
from corolla.superlink.config import SuperLinkConfig
from corolla.superlink.link import SuperLink

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("limit_mib", [1, 220])
def test_a_fab_over_the_limit_gets_the_fab_checks_message(limit_mib: int) -> None:
    link = SuperLink(
        SuperLinkConfig(
            serverappio_address="127.0.0.1:0",
            fleet_address="127.0.0.1:0",
            exec_address="127.0.0.1:0",
            fab_limits=FabLimits(max_fab_bytes=limit_mib * MiB),
        )
    )
    link.start()
    try:
        size = limit_mib * MiB + 64 * 1024  # just over the FAB limit
        request = exec_pb2.StartRunRequest(fab=run_pb2.Fab(hash="0" * 64, content=b"\0" * size))
        with (
            create_channel(
                link.addresses["exec"],
                insecure=True,
                options=[("grpc.max_send_message_length", 2**31 - 1)],
            ) as channel,
            pytest.raises(grpc.RpcError) as refused,
        ):
            exec_pb2_grpc.ExecStub(channel).StartRun(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        assert f"more than the limit of {limit_mib}.0 MiB" in refused.value.details()
    finally:
        link.stop()
