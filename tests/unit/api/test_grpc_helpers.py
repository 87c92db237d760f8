"""gRPC plumbing: a busy port is refused, errors map to status codes and back."""

from __future__ import annotations

import grpc
import pytest

from corolla.common import errors
from corolla.common.grpc import _merge_options, bind, create_server, status_for


def test_second_server_on_a_busy_port_fails() -> None:
    first = create_server(max_workers=2)
    port = bind(first, "127.0.0.1:0", None)
    first.start()
    try:
        second = create_server(max_workers=2)
        with pytest.raises(errors.Unavailable, match="cannot bind"):
            bind(second, f"127.0.0.1:{port}", None)
    finally:
        first.stop(0)


def test_caller_options_override_defaults() -> None:
    merged = dict(_merge_options([("grpc.max_receive_message_length", 123)]))
    assert merged["grpc.max_receive_message_length"] == 123
    assert len(_merge_options([("grpc.max_receive_message_length", 123)])) == len(merged)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.ResourceExhausted("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.CorollaError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_mapping(error: errors.CorollaError, code: grpc.StatusCode) -> None:
    assert status_for(error) == code
