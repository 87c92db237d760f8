"""Which hosts and addresses stay on this machine."""

from __future__ import annotations

import pytest

from corolla.common.net import is_loopback_address, is_loopback_host


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("example.org", False),
        ("localhost.example.org", False),
        ("", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:9093", True),
        ("[::1]:9093", True),
        ("localhost:9093", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0:9093", False),
        ("[::]:9093", False),
        ("192.168.1.5:9093", False),
        ("superlink.example.org:9093", False),
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert is_loopback_address(address) is loopback
